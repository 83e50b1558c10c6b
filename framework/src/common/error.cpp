// kvlab::Error is header-only; this unit keeps the core library non-empty while it grows.
#include "kvlab/common/error.h"
