#ifndef HISTORIAN_CHIREDIS_SHIM_H
#define HISTORIAN_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
