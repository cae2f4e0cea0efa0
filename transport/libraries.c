/* Versions of the libraries transport/ links. */
#include <msgpack.h>
#include <nng/nng.h>
#include <sodium.h>

#include "transport/transport.h"

void tp_libraries(sm_libver_cb cb, void *arg)
{
    cb(arg, "nng", nng_version());
    cb(arg, "libsodium", sodium_version_string());
    cb(arg, "msgpack-c", msgpack_version());
}
