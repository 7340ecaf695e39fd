// shim.h — lets g++ compile the backend's CUDA C kernels for the CPU emulator (fakecuda.cpp).
// Each block runs on one OS thread; its CUDA threads are ucontext fibers that switch only at
// __syncthreads, so block-level barriers and shared memory (static storage, one block at a time)
// behave as on a GPU. Atomics are plain read-modify-writes (one block runs at a time).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <ucontext.h>
#include <utility>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x, y, z;
};
typedef dim3 uint3;

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)

namespace fake {

// Fibers: on x86-64 a minimal context switch (callee-saved registers and the stack pointer, no
// system call); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void fake_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.type fake_switch, @function
fake_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size fake_switch, .-fake_switch
)");
#define FAKE_ASM_SWITCH 1
#endif

struct Fiber {
#ifdef FAKE_ASM_SWITCH
  void* sp;
#else
  ucontext_t ctx;
#endif
  bool done;
  std::vector<char> stack;
  dim3 tid;
};

#ifdef FAKE_ASM_SWITCH
static void* sched_sp;
#else
static ucontext_t sched;
#endif
static std::vector<Fiber> fibers;
static size_t cur;
static void (*body)(void*);
static void* body_arg;
static bool yielded;  // some thread of the block reached __syncthreads
static bool direct;   // threads run as plain calls: a barrier would be a bug

static void to_scheduler() {
#ifdef FAKE_ASM_SWITCH
  fake_switch(&fibers[cur].sp, sched_sp);
#else
  swapcontext(&fibers[cur].ctx, &sched);
#endif
}

static void trampoline() {
  body(body_arg);
  fibers[cur].done = true;
  to_scheduler();  // never resumed
  abort();
}

static void start_fiber(Fiber& f) {
  if (f.stack.empty()) f.stack.resize(256 * 1024);
#ifdef FAKE_ASM_SWITCH
  uintptr_t top = ((uintptr_t)(f.stack.data() + f.stack.size())) & ~(uintptr_t)15;
  uintptr_t* s = (uintptr_t*)top;
  *--s = 0;                       // return address seen by trampoline
  *--s = (uintptr_t)&trampoline;  // where fake_switch returns to
  for (int i = 0; i < 6; ++i) *--s = 0;
  f.sp = s;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.data();
  f.ctx.uc_stack.ss_size = f.stack.size();
  f.ctx.uc_link = &sched;
  makecontext(&f.ctx, trampoline, 0);
#endif
  f.done = false;
}

static void resume(size_t i) {
  cur = i;
  threadIdx = fibers[i].tid;
#ifdef FAKE_ASM_SWITCH
  fake_switch(&sched_sp, fibers[i].sp);
#else
  swapcontext(&sched, &fibers[i].ctx);
#endif
}

// run_block runs one block. Thread 0 runs first as a fiber; when it finishes without reaching a
// barrier the kernel has none (barriers are block-uniform), and the other threads run as plain
// calls. Otherwise all threads run as fibers, round-robin from barrier to barrier.
static void run_block(unsigned nthreads) {
  if (fibers.size() < nthreads) fibers.resize(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) {
    fibers[i].tid.x = i % blockDim.x;
    fibers[i].tid.y = (i / blockDim.x) % blockDim.y;
    fibers[i].tid.z = i / (blockDim.x * blockDim.y);
  }
  yielded = false;
  start_fiber(fibers[0]);
  resume(0);
  if (!yielded) {
    direct = true;
    for (unsigned i = 1; i < nthreads; ++i) {
      cur = i;
      threadIdx = fibers[i].tid;
      body(body_arg);
    }
    direct = false;
    return;
  }
  // Thread 0 waits at its first barrier: bring the others there before the next round.
  for (unsigned i = 1; i < nthreads; ++i) {
    start_fiber(fibers[i]);
    resume(i);
  }
  for (;;) {
    bool any = false;
    for (unsigned i = 0; i < nthreads; ++i) {
      if (fibers[i].done) continue;
      resume(i);
      any = true;
    }
    if (!any) break;
  }
}

template <typename F>
static void call_body(void* p) {
  (*static_cast<F*>(p))();
}

template <typename... A, size_t... I>
static void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<typename std::remove_cv<typename std::remove_reference<A>::type>::type*>(args[I])...);
}

template <typename... A>
static void launch(void (*f)(A...), void** args, const unsigned* cfg) {
  gridDim = {cfg[0], cfg[1], cfg[2]};
  blockDim = {cfg[3], cfg[4], cfg[5]};
  auto run = [&]() { invoke(f, args, std::index_sequence_for<A...>{}); };
  body = &call_body<decltype(run)>;
  body_arg = &run;
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        run_block(blockDim.x * blockDim.y * blockDim.z);
      }
}

}  // namespace fake

static inline void __syncthreads() {
  if (fake::direct) {
    fprintf(stderr, "fakecuda: thread %u reached __syncthreads but thread 0 finished without one (non-uniform barrier)\n",
            threadIdx.x);
    abort();
  }
  fake::yielded = true;
  fake::to_scheduler();
}

static inline float atomicAdd(float* a, float v) { float o = *a; *a = o + v; return o; }
static inline double atomicAdd(double* a, double v) { double o = *a; *a = o + v; return o; }
static inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  unsigned long long o = *a; *a = o + v; return o;
}
static inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) {
  unsigned long long o = *a; if (v < o) *a = v; return o;
}
static inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long cmp, unsigned long long v) {
  unsigned long long o = *a; if (o == cmp) *a = v; return o;
}
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
static inline long long __double_as_longlong(double v) { long long d; memcpy(&d, &v, 8); return d; }
static inline float __uint_as_float(unsigned v) { float f; memcpy(&f, &v, 4); return f; }
static inline unsigned __float_as_uint(float v) { unsigned u; memcpy(&u, &v, 4); return u; }
