/* One error space for all of sagemesh: codes, names and messages. */
#ifndef SM_BASE_ERR_H
#define SM_BASE_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Every fallible function in sagemesh returns an int: SM_OK (0) on success or
 * one of the positive codes below. Failures of errno, nng, raft and libsodium
 * are mapped to these codes once, at the edge of the module that calls them;
 * the original code is kept in the object's error message.
 *
 * The X-macro generates the enum, sm_strerror() and sm_errname() from one
 * table, so the three can never disagree. */
#define SM_ERRORS(X)                                              \
    X(SM_OK, "success")                                           \
    X(SM_ENOMEM, "out of memory")                                 \
    X(SM_EINVAL, "invalid argument")                              \
    X(SM_ERANGE, "value out of range")                            \
    X(SM_ETOOBIG, "input larger than the configured limit")       \
    X(SM_EMALFORMED, "malformed input")                           \
    X(SM_EUNSUPPORTED, "unsupported encoding or version")         \
    X(SM_ECORRUPT, "stored data is corrupt")                      \
    X(SM_EIO, "input/output error")                               \
    X(SM_ENOTFOUND, "not found")                                  \
    X(SM_EEXIST, "already exists")                                \
    X(SM_EPERM, "permission denied")                              \
    X(SM_EAUTH, "authentication failed")                          \
    X(SM_EAGAIN, "resource temporarily unavailable, retry later") \
    X(SM_ETIMEDOUT, "timed out")                                  \
    X(SM_ECLOSED, "object closed")                                \
    X(SM_ENOTLEADER, "not the leader")                            \
    X(SM_ECRYPTO, "cryptographic library failure")                \
    X(SM_ENOTYET, "not available in this version")                \
    X(SM_ECONFLICT, "not possible in the current state")          \
    X(SM_EINTERNAL, "internal error")

#define SM__ERR_ENUM(name, msg) name,
enum sm_err { SM_ERRORS(SM__ERR_ENUM) SM_ERR__COUNT };
#undef SM__ERR_ENUM

/* Size of the per-object error message buffers ("context: cause"). */
#define SM_ERRMSG_SIZE 256

/* Returns a static, human-readable description of @code ("out of memory").
 * Unknown codes (negative or past the table) yield "unknown error". Never
 * returns NULL. Thread-safe. */
const char *sm_strerror(int code);

/* Returns the symbolic name of @code ("SM_ENOMEM"), or "SM_EUNKNOWN" for a
 * code outside the table. Never returns NULL. Thread-safe. */
const char *sm_errname(int code);

/* Formats a message into @msg (SM_ERRMSG_SIZE bytes), replacing its content.
 * Output longer than the buffer is truncated and always NUL-terminated. */
void sm_errmsg_printf(char *msg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the message already in @msg with a formatted context, giving
 * "context: previous message" (after raft's ErrMsgWrapf). An empty @msg
 * becomes just the context. Truncates and NUL-terminates. */
void sm_errmsg_wrapf(char *msg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Maps an errno value to the closest sm_err code (ENOMEM -> SM_ENOMEM,
 * ENOENT -> SM_ENOTFOUND, EACCES/EPERM -> SM_EPERM, ...). Anything not listed
 * becomes SM_EIO. 0 maps to SM_OK. */
int sm_err_from_errno(int errnum);

/* Called when an invariant is broken: prints "file:line: assertion failed:
 * expr" to stderr and aborts. Never returns. Do not use it for failures that
 * input or the environment can cause; return an error instead. */
_Noreturn void sm_panic(const char *file, int line, const char *expr);

/* Checks an invariant. The argument is parenthesised, the failed expression is
 * printed, and the macro is a single statement (safe under if/else). It stays
 * active in release builds: a broken invariant must stop the process. */
#define SM_ASSERT(x)                          \
    do {                                      \
        if (!(x)) {                           \
            sm_panic(__FILE__, __LINE__, #x); \
        }                                     \
    } while (0)

#endif /* SM_BASE_ERR_H */
