/* CRC-32C (Castagnoli): the checksum of the window log and of model
 * checkpoints. */
#ifndef SM_BASE_CRC32C_H
#define SM_BASE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-32C as in iSCSI and ext4: reflected polynomial 0x82F63B78, initial
 * value and final XOR 0xFFFFFFFF, so sm_crc32c(0, "123456789", 9) is
 * 0xE3069283. The functions take the CRC of the bytes so far (0 for none)
 * and return it extended by @len bytes at @data, so
 * sm_crc32c(sm_crc32c(0, a, n), b, m) is the CRC of a followed by b.
 * All are pure and thread-safe; @data may be NULL when @len is 0. */

/* Uses the SSE4.2 crc32 instruction when the CPU has it, else the table. */
uint32_t sm_crc32c(uint32_t crc, const void *data, size_t len);

/* The portable slicing-by-8 implementation, whatever the CPU. */
uint32_t sm_crc32c_portable(uint32_t crc, const void *data, size_t len);

/* Whether sm_crc32c_hw() can run on this CPU (x86-64 with SSE4.2). */
bool sm_crc32c_has_hw(void);

/* The SSE4.2 implementation; only when sm_crc32c_has_hw() (asserts). */
uint32_t sm_crc32c_hw(uint32_t crc, const void *data, size_t len);

#endif /* SM_BASE_CRC32C_H */
