#pragma once
// This machine's memory bandwidth, measured once with a STREAM-style triad over arrays far larger
// than the caches, using every thread LibTorch uses. Kernel benchmarks report their GB/s as a
// fraction of it.
namespace kvlab::bench {
double triad_gbs();
}  // namespace kvlab::bench
