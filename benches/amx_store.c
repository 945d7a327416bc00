/* Where the time of a small AMX product goes (docs/serving.md, "bf16 on AMX tiles"): `x [512, 64] W^T`
 * with 64 output columns, bf16 operands and f32 sums, in the 2 x 2 tile blocks of
 * crates/seqrec-tensor/src/amx.rs (bias tiles loaded with row stride 0, two depth chunks, four
 * accumulator tiles stored per block), against the same products without the stores, with the
 * stores through an aligned scratch and a vector copy, with B's four tiles kept loaded, and with
 * output rows of 50, 64 and 72 floats (SASRec's d = 50 gives 200-byte rows that do not start on
 * a cache line). Three rounds of each.
 * Run: gcc -O2 -mamx-tile -mamx-bf16 -mavx512f benches/amx_store.c -o /tmp/amx_store && /tmp/amx_store */
#include "amx_setup.h"
#include <stdlib.h>
#define M 512
#define CH 2
#define NT 4   /* column tiles */
static uint16_t A[M*CH*32] __attribute__((aligned(64)));
static uint16_t B[NT*CH*512] __attribute__((aligned(64)));
static float bias[64] __attribute__((aligned(64)));
static float out[M*256] __attribute__((aligned(64)));
/* mode: 0 = as amx.rs (2 x 2 blocks, bias loads, tile stores to rows of ldo floats); 1 = no stores;
   2 = accumulators from TILEZERO instead of the bias; 3 = B's four tiles loaded once per column
   pair, one row tile at a time; 4 = stores to an aligned scratch, then a vector copy to out */
static void run(int mode, int ldo){
  int lda = CH*32*2, ldb = 64;
  for (int jp=0; jp<NT; jp+=2) {
    if (mode==3) {
      _tile_loadd(4, B+(jp+0)*CH*512+0, ldb); _tile_loadd(5, B+(jp+0)*CH*512+512, ldb);
      _tile_loadd(6, B+(jp+1)*CH*512+0, ldb); _tile_loadd(7, B+(jp+1)*CH*512+512, ldb);
      for (int r0=0; r0<M; r0+=32) {
        _tile_loadd(0, bias+jp*16, 0); _tile_loadd(1, bias+jp*16+16, 0);
        _tile_loadd(2, A + r0*CH*32, lda); _tile_loadd(3, A + r0*CH*32+32, lda);
        _tile_dpbf16ps(0,2,4); _tile_dpbf16ps(1,2,6); _tile_dpbf16ps(0,3,5); _tile_dpbf16ps(1,3,7);
        _tile_stored(0, out + r0*ldo + jp*16, ldo*4); _tile_stored(1, out + r0*ldo + jp*16+16, ldo*4);
        int r1 = r0+16;
        _tile_loadd(0, bias+jp*16, 0); _tile_loadd(1, bias+jp*16+16, 0);
        _tile_loadd(2, A + r1*CH*32, lda); _tile_loadd(3, A + r1*CH*32+32, lda);
        _tile_dpbf16ps(0,2,4); _tile_dpbf16ps(1,2,6); _tile_dpbf16ps(0,3,5); _tile_dpbf16ps(1,3,7);
        _tile_stored(0, out + r1*ldo + jp*16, ldo*4); _tile_stored(1, out + r1*ldo + jp*16+16, ldo*4);
      }
      continue;
    }
    for (int r0=0; r0<M; r0+=32) {
      if (mode==2) { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
      else { _tile_loadd(0, bias+jp*16, 0); _tile_loadd(1, bias+jp*16+16, 0); _tile_loadd(2, bias+jp*16, 0); _tile_loadd(3, bias+jp*16+16, 0); }
      for (int kc=0; kc<CH; kc++) {
        _tile_loadd(4, A + r0*CH*32 + kc*32, lda);
        _tile_loadd(6, B + (jp+0)*CH*512 + kc*512, ldb);
        _tile_dpbf16ps(0,4,6);
        _tile_loadd(7, B + (jp+1)*CH*512 + kc*512, ldb);
        _tile_dpbf16ps(1,4,7);
        _tile_loadd(5, A + (r0+16)*CH*32 + kc*32, lda);
        _tile_dpbf16ps(2,5,6);
        _tile_dpbf16ps(3,5,7);
      }
      if (mode==4) {
        static float sc[4][256] __attribute__((aligned(64)));
        _tile_stored(0, sc[0], 64); _tile_stored(1, sc[1], 64); _tile_stored(2, sc[2], 64); _tile_stored(3, sc[3], 64);
        for (int t=0;t<4;t++){ int i=t>>1, j=t&1; float* o = out + (r0+16*i)*ldo + (jp+j)*16;
          for (int r=0;r<16;r++) _mm512_storeu_ps(o + r*ldo, _mm512_load_ps(sc[t]+16*r)); }
      } else if (mode!=1) {
        _tile_stored(0, out + r0*ldo + jp*16, ldo*4);
        _tile_stored(1, out + r0*ldo + jp*16+16, ldo*4);
        _tile_stored(2, out + (r0+16)*ldo + jp*16, ldo*4);
        _tile_stored(3, out + (r0+16)*ldo + jp*16+16, ldo*4);
      }
    }
  }
}
int main(int argc, char**argv){
  if (amx_setup()) return 1;
  for(int i=0;i<M*CH*32;i++) A[i]=0x3f80;
  for(int i=0;i<NT*CH*512;i++) B[i]=0x3f80;
  enum { CASES = 8 };
  int modes[CASES] = {0, 0, 0, 1, 2, 3, 4, 4};
  int ldos[CASES] = {50, 64, 72, 64, 64, 64, 50, 64};
  const char* names[CASES] = {"as amx.rs, rows of 50", "as amx.rs, rows of 64", "as amx.rs, rows of 72",
    "no stores", "zero, not bias", "B kept loaded, rows 64", "scratch + copy, 50", "scratch + copy, 64"};
  for (int rep=0; rep<3; rep++)
  for (int v=0; v<CASES; v++){
    int iters=20000;
    for (int i=0;i<1000;i++) run(modes[v], ldos[v]);
    double t0=now();
    for (int i=0;i<iters;i++) run(modes[v], ldos[v]);
    double dt=(now()-t0)/iters;
    double flop = 2.0*M*64*64;
    printf("%-24s %5.2f us  %5.0f GFLOP/s\n", names[v], dt*1e6, flop/dt/1e9);
  }
  _tile_release();
  return 0;
}
