/* How modules report the versions of the libraries they link. */
#ifndef SM_BASE_VERSION_H
#define SM_BASE_VERSION_H

/* Called once per linked library with its name ("libsodium") and version
 * ("1.0.18"). Both strings are borrowed for the duration of the call only. */
typedef void (*sm_libver_cb)(void *arg, const char *name, const char *version);

#endif /* SM_BASE_VERSION_H */
