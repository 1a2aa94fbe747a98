#ifndef HISTORIAN_CSQLITE_SHIM_H
#define HISTORIAN_CSQLITE_SHIM_H
#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro that casts -1 to a function pointer, which Swift cannot import.

/// The destructor value that makes SQLite copy a bound value before the call returns.
static inline sqlite3_destructor_type historian_sqlite_transient(void) {
    return SQLITE_TRANSIENT;
}
#endif
