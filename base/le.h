/* Little-endian integers in byte buffers: the wire and file formats of the
 * mesh, the checkpoints and the logs are little-endian whatever the host.
 * The caller guarantees the buffer holds the bytes; nothing here fails. */
#ifndef SM_BASE_LE_H
#define SM_BASE_LE_H

#include <stdint.h>

static inline void sm_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void sm_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint32_t sm_get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static inline uint64_t sm_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

#endif /* SM_BASE_LE_H */
