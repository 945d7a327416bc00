/* One thread's AMX-BF16 peak: four independent TDPBF16PS accumulator tiles (16 x 16 f32 each, bf16
 * inputs 16 x 32), 20 M iterations; asks Linux for the tile-data permission first (arch_prctl). Beside
 * fma_peak.c, it sizes what a bf16 serving forward could gain on a CPU with AMX (Sapphire Rapids).
 * Run: gcc -O2 -mamx-tile -mamx-bf16 benches/amx_peak.c -o /tmp/amx_peak && /tmp/amx_peak */
#include "amx_setup.h"
int main(){
  if (amx_setup()) return 1;
  static uint16_t a[16*32], b[16*32]; static float out[16*16];
  for(int i=0;i<16*32;i++){a[i]=0x3f80; b[i]=0x3f80;}
  _tile_zero(0);_tile_zero(1);_tile_zero(2);_tile_zero(3);
  _tile_loadd(4,a,64);_tile_loadd(5,b,64);_tile_loadd(6,a,64);_tile_loadd(7,b,64);
  long iters=20000000; double t0=now();
  for(long i=0;i<iters;i++){
    _tile_dpbf16ps(0,4,5); _tile_dpbf16ps(1,4,7); _tile_dpbf16ps(2,6,5); _tile_dpbf16ps(3,6,7);
  }
  double dt=now()-t0;
  _tile_stored(0,out,64);
  printf("AMX bf16: %.1f GFLOP/s (check %.0f)\n", 4.0*iters*16*16*32*2/dt/1e9, out[0]);
  _tile_release();
  return 0;
}
