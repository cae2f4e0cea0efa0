/* Error codes, names, messages and the panic handler. */
#include "base/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SM__ERR_MSG(name, msg) msg,
static const char *const err_messages[] = {SM_ERRORS(SM__ERR_MSG)};
#undef SM__ERR_MSG

#define SM__ERR_NAME(name, msg) #name,
static const char *const err_names[] = {SM_ERRORS(SM__ERR_NAME)};
#undef SM__ERR_NAME

const char *sm_strerror(int code)
{
    if (code < 0 || code >= SM_ERR__COUNT) {
        return "unknown error";
    }
    return err_messages[code];
}

const char *sm_errname(int code)
{
    if (code < 0 || code >= SM_ERR__COUNT) {
        return "SM_EUNKNOWN";
    }
    return err_names[code];
}

void sm_errmsg_printf(char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, SM_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void sm_errmsg_wrapf(char *msg, const char *fmt, ...)
{
    char prev[SM_ERRMSG_SIZE];
    snprintf(prev, sizeof prev, "%s", msg);

    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, SM_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
    if (n < 0 || prev[0] == '\0' || (size_t)n >= SM_ERRMSG_SIZE) {
        return;
    }
    /* Append ": prev" by hand: the truncation is intended, and snprintf
     * with a bounded %s draws -Wformat-truncation. */
    size_t at = (size_t)n;
    for (const char *p = ": "; *p != '\0' && at + 1 < SM_ERRMSG_SIZE; p++) {
        msg[at++] = *p;
    }
    for (const char *p = prev; *p != '\0' && at + 1 < SM_ERRMSG_SIZE; p++) {
        msg[at++] = *p;
    }
    msg[at] = '\0';
}

int sm_err_from_errno(int errnum)
{
    switch (errnum) {
        case 0:
            return SM_OK;
        case ENOMEM:
            return SM_ENOMEM;
        case EINVAL:
            return SM_EINVAL;
        case ERANGE:
        case EOVERFLOW:
            return SM_ERANGE;
        case E2BIG:
        case EFBIG:
        case EMSGSIZE:
            return SM_ETOOBIG;
        case ENOENT:
            return SM_ENOTFOUND;
        case EEXIST:
            return SM_EEXIST;
        case EACCES:
        case EPERM:
        case EROFS:
            return SM_EPERM;
        case EAGAIN:
        case EBUSY:
        case EINTR:
            return SM_EAGAIN;
        case ETIMEDOUT:
            return SM_ETIMEDOUT;
        case ENOTSUP:
            return SM_EUNSUPPORTED;
        default:
            return SM_EIO;
    }
}

void sm_panic(const char *file, int line, const char *expr)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}
