// zlib from Debian's zlib1g-dev (deflate for sync batches; see docs/decisions.md).
#include <zlib.h>
