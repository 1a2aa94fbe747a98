#ifndef HISTORIAN_CZLIB_SHIM_H
#define HISTORIAN_CZLIB_SHIM_H
#include <zlib.h>

// deflateInit2 and inflateInit2 are macros, which Swift cannot import.

/// A deflate stream that writes the gzip format (window bits 15, plus 16 for the gzip wrapper).
static inline int historian_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

/// An inflate stream that reads the gzip format only (window bits 15, plus 16).
static inline int historian_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 15 + 16);
}
#endif
