// The one place that picks the libfuse API version.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
