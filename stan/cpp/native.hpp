// The C++ user functions a rendered program may declare without a body (USER_HEADER; scribe_cli/cache.py).
#ifndef SCRIBE_NATIVE_HPP
#define SCRIBE_NATIVE_HPP

#include "capture_cells.hpp"
#include "pairs.hpp"

#endif  // SCRIBE_NATIVE_HPP
