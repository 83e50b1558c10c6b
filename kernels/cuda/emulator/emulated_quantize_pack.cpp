// The GPU source compiled as C++ for the host emulator (cuda_emulator.h).
#include "../quantize_pack.cu"
