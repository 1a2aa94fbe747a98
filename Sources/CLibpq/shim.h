#ifndef HISTORIAN_CLIBPQ_SHIM_H
#define HISTORIAN_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
