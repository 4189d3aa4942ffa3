// Fibers for the CUDA emulation: the threads of one block run as cooperative fibers on one OS
// thread, switched only where CUDA threads must wait for each other (`__syncthreads`, `__syncwarp`
// and the warp intrinsics). Included by cuda_emu.h; not meant to be used on its own.
//
// Why fibers: an OS thread per CUDA thread (the emulation's first engine) costs a thread switch at
// every barrier and a futex per warp shuffle, far too slow for whole training steps. A fiber switch
// here is a handful of register moves (x86-64; other targets fall back to ucontext).
//
// Scheduling of one block (`run_block`): every fiber runs until it finishes or waits at a barrier;
// then the barriers whose participants all arrived open (warp barriers first, then the block
// barrier), and the round repeats. A thread that returned counts as arrived at every later barrier
// (as an exited thread on the GPU). When no fiber can run and no barrier can open, the kernel is
// deadlocked (a `__syncthreads` not reached by every thread, a warp intrinsic not called by every
// lane): the launch stops with an error instead of hanging.
//
// Kernels with no barrier and no warp operation run without fibers, as a plain loop over the
// threads (`run_block_plain`); a barrier reached in that mode is reported as an error.
#pragma once

#include <sys/mman.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace sdm_emu {

// ---------------------------------------------------------------------------------------------
// Execution contexts.
#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save, and resumes the context whose stack pointer is `load`.
extern "C" __attribute__((visibility("hidden"))) void sdm_emu_switch(void** save, void* load);
asm(R"(
    .text
    .p2align 4
    .globl sdm_emu_switch
    .hidden sdm_emu_switch
    .type sdm_emu_switch,@function
sdm_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size sdm_emu_switch, .-sdm_emu_switch
)");

struct Context {
    void* sp = nullptr;
};

// Prepares `c` to start `entry()` on the stack [lo, lo + size) at its first resume.
inline void context_init(Context& c, char* lo, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(lo + size)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;           // where `entry` would return to: it never returns
    *--sp = (void*)entry;      // popped by `ret`: 16-byte aligned slot, so entry sees rsp ≡ 8 (mod 16)
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp, rbx, r12–r15
    uint64_t csr = 0x1F80u | ((uint64_t)0x037Fu << 32);  // default MXCSR, x87 control word
    *--sp = (void*)csr;
    c.sp = sp;
}

inline void context_switch(Context& from, Context& to) { sdm_emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

inline void context_init(Context& c, char* lo, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = lo;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---------------------------------------------------------------------------------------------
// The block scheduler of the calling OS thread.
enum class FiberState : unsigned char { Ready, AtBlockBarrier, AtWarpBarrier, Done };

constexpr unsigned kMaxBlock = 1024;
constexpr size_t kStackSize = 64 * 1024;
constexpr uint64_t kCanary = 0x5344'4d46'4942'4552ull;  // "SDMFIBER"

struct Scheduler {
    // Fiber stacks, mapped once per OS thread for kMaxBlock fibers (one mapping: guard pages
    // would cost a kernel memory map each, and hosts limit their number). The lowest word of
    // each stack holds a canary, checked after every block, so an overflow is reported.
    char* stacks = nullptr;
    std::vector<Context> fibers;
    std::vector<FiberState> state;
    // Warp exchange slots, two sets used alternately (see cuda_emu.h's warp_exchange), and each
    // thread's count of exchanges so far (its parity picks the set).
    std::vector<std::array<unsigned char, 16>> slot[2];
    std::vector<unsigned char> exchanges;
    Context main;
    unsigned block = 0;     // threads in the running block
    unsigned current = 0;   // the running fiber
    bool in_fiber = false;  // false: plain mode (no barriers allowed)
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    char error[512] = {0};

    Scheduler() : slot{std::vector<std::array<unsigned char, 16>>(kMaxBlock), std::vector<std::array<unsigned char, 16>>(kMaxBlock)}, exchanges(kMaxBlock) {}

    bool map_stacks() {
        if (stacks) return true;
        void* m = mmap(nullptr, kStackSize * kMaxBlock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        stacks = (char*)m;
        fibers.resize(kMaxBlock);
        state.resize(kMaxBlock);
        return true;
    }
    // The usable stack of fiber t (above its canary word).
    char* stack_of(unsigned t) { return stacks + t * kStackSize + sizeof(uint64_t); }
    uint64_t& canary_of(unsigned t) { return *(uint64_t*)(stacks + t * kStackSize); }
};

inline thread_local Scheduler tl_sched;

// Every thread's coordinates; set by the scheduler before a fiber (or loop iteration) runs.
}  // namespace sdm_emu

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace sdm_emu {

inline void fail(const char* msg) {
    Scheduler& s = tl_sched;
    if (!s.error[0]) std::snprintf(s.error, sizeof s.error, "block %u thread %u: %s", blockIdx.x, threadIdx.x, msg);
}

[[noreturn]] inline void fiber_entry() {
    Scheduler& s = tl_sched;
    s.body(s.body_arg);
    s.state[s.current] = FiberState::Done;
    context_switch(s.fibers[s.current], s.main);
    __builtin_unreachable();
}

// Suspends the calling fiber at a barrier of kind `at` until the scheduler opens it.
inline void wait_at(FiberState at) {
    Scheduler& s = tl_sched;
    if (!s.in_fiber) {
        if (s.block == 1) return;  // a single thread is always complete at any barrier
        fail("a barrier or warp operation in a kernel run without fibers (the PTX scan missed it)");
        return;
    }
    unsigned me = s.current;
    s.state[me] = at;
    context_switch(s.fibers[me], s.main);
    threadIdx = uint3{me, 0, 0};
}

// Opens the barriers whose participants all arrived. Returns whether any fiber became ready.
inline bool open_barriers(Scheduler& s) {
    bool opened = false;
    for (unsigned w = 0; w * 32 < s.block; ++w) {
        unsigned lo = w * 32, hi = lo + 32 < s.block ? lo + 32 : s.block;
        bool waiting = false, all = true;
        for (unsigned t = lo; t < hi; ++t) {
            if (s.state[t] == FiberState::AtWarpBarrier) waiting = true;
            else if (s.state[t] != FiberState::Done) all = false;
        }
        if (waiting && all) {
            for (unsigned t = lo; t < hi; ++t)
                if (s.state[t] == FiberState::AtWarpBarrier) s.state[t] = FiberState::Ready;
            opened = true;
        }
    }
    if (opened) return true;
    bool waiting = false, all = true;
    for (unsigned t = 0; t < s.block; ++t) {
        if (s.state[t] == FiberState::AtBlockBarrier) waiting = true;
        else if (s.state[t] != FiberState::Done) all = false;
    }
    if (waiting && all) {
        for (unsigned t = 0; t < s.block; ++t)
            if (s.state[t] == FiberState::AtBlockBarrier) s.state[t] = FiberState::Ready;
        return true;
    }
    return false;
}

// Runs block `b` of `grid` with `block` fibers calling `body(arg)`. Returns 0, or −1 with the
// reason in tl_sched.error.
inline int run_block(unsigned b, unsigned grid, unsigned block, void (*body)(void*), void* arg) {
    Scheduler& s = tl_sched;
    if (!s.map_stacks()) {
        std::snprintf(s.error, sizeof s.error, "cannot map fiber stacks");
        return -1;
    }
    s.block = block;
    s.body = body;
    s.body_arg = arg;
    s.in_fiber = true;
    blockIdx = uint3{b, 0, 0};
    blockDim = dim3(block);
    gridDim = dim3(grid);
    for (unsigned t = 0; t < block; ++t) {
        s.canary_of(t) = kCanary;
        context_init(s.fibers[t], s.stack_of(t), kStackSize - sizeof(uint64_t), fiber_entry);
        s.state[t] = FiberState::Ready;
        s.exchanges[t] = 0;
    }
    unsigned done = 0;
    while (done < block) {
        for (unsigned t = 0; t < block; ++t) {
            if (s.state[t] != FiberState::Ready) continue;
            s.current = t;
            threadIdx = uint3{t, 0, 0};
            context_switch(s.main, s.fibers[t]);
            if (s.state[t] == FiberState::Done) ++done;
        }
        if (s.error[0]) break;
        if (done < block && !open_barriers(s)) {
            unsigned at_block = 0, at_warp = 0;
            for (unsigned t = 0; t < block; ++t) {
                at_block += s.state[t] == FiberState::AtBlockBarrier;
                at_warp += s.state[t] == FiberState::AtWarpBarrier;
            }
            std::snprintf(s.error, sizeof s.error,
                          "block %u deadlocked: %u thread(s) wait at __syncthreads, %u at a warp operation, %u returned "
                          "(a barrier not reached by every thread of the block or warp)",
                          b, at_block, at_warp, done);
            break;
        }
    }
    s.in_fiber = false;
    for (unsigned t = 0; t < block && !s.error[0]; ++t)
        if (s.canary_of(t) != kCanary)
            std::snprintf(s.error, sizeof s.error, "block %u thread %u overflowed its %zu-byte fiber stack", b, t, kStackSize);
    return s.error[0] ? -1 : 0;
}

// Runs block `b` as a loop over its threads (kernels without barriers or warp operations).
inline int run_block_plain(unsigned b, unsigned grid, unsigned block, void (*body)(void*), void* arg) {
    Scheduler& s = tl_sched;
    s.block = block;
    s.in_fiber = false;
    blockIdx = uint3{b, 0, 0};
    blockDim = dim3(block);
    gridDim = dim3(grid);
    for (unsigned t = 0; t < block; ++t) {
        threadIdx = uint3{t, 0, 0};
        s.exchanges[t] = 0;
        body(arg);
        if (s.error[0]) return -1;
    }
    return 0;
}

}  // namespace sdm_emu
