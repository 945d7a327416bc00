/* What benches/amx_peak.c and benches/amx_store.c share: the tile-data permission from Linux
 * (arch_prctl), a palette-1 configuration with all eight tiles 16 rows of 64 bytes, and a clock. */
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <time.h>

typedef struct { uint8_t palette, start_row, rsv[14]; uint16_t colsb[16]; uint8_t rows[16]; } __attribute__((packed)) cfg_t;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

/* Returns 0 once the tiles are usable, 1 (after a message) when Linux does not permit them. */
static int amx_setup(void) {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    fprintf(stderr, "AMX tile data not permitted on this machine\n");
    return 1;
  }
  /* Initialised statically: with a local configuration filled at run time, amx_store.c built with
   * gcc -O2 raised SIGILL on its first tile load here (at -O0 it ran). */
  static const cfg_t c = { .palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                           .rows = {16, 16, 16, 16, 16, 16, 16, 16} };
  _tile_loadconfig(&c);
  return 0;
}
