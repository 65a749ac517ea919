// A NumPy memory handler that reuses freed large array buffers (ctreg.ops.reuse_freed_arrays).
//
// glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mapping
// and unmaps it when freed, so each new full-size array of a registration is page-faulted in
// again and zeroed by the kernel: on 512x512x300 that was ~16 % of the CPU time (perf).  This
// handler keeps freed blocks of at least `min_bytes` and hands them out again for requests of
// the same size (up to 25 % larger), already resident.
//
// Memory: on a request that no cached block fits, cached blocks of at least that many bytes
// in total are released (largest first) before a fresh block is allocated, so the process
// never holds more than it would without the cache: resident = live + cached only grows on a
// miss that emptied the cache, where it equals live.
//
// The handler is installed with PyDataMem_SetHandler, which sets it for the calling context
// only (a context variable): other threads and the code around are unaffected.  Arrays keep a
// reference to the handler capsule that allocated them, so the cache state lives until the last
// of them is freed; after close() every free goes straight back to the system.
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "common.hpp"

namespace ctreg::bind {
namespace {

struct Cache {
    std::mutex mu;
    std::size_t min_bytes;
    bool open = true;
    std::unordered_map<void*, std::size_t> owned;  // large blocks handed out -> capacity
    std::multimap<std::size_t, void*> spare;       // freed large blocks by capacity
    std::size_t spare_bytes = 0;
    std::size_t hits = 0, misses = 0, reused_bytes = 0;

    explicit Cache(std::size_t min) : min_bytes(min) {}

    // Release spare blocks (largest first) until `need` bytes are gone or none is left.
    void release(std::size_t need) {
        std::size_t freed = 0;
        while (!spare.empty() && freed < need) {
            auto it = std::prev(spare.end());
            freed += it->first;
            spare_bytes -= it->first;
            std::free(it->second);
            spare.erase(it);
        }
    }

    void* take(std::size_t n, bool zero) {
        std::lock_guard<std::mutex> lock(mu);
        if (open) {
            auto it = spare.lower_bound(n);
            if (it != spare.end() && it->first <= n + n / 4) {
                void* p = it->second;
                std::size_t cap = it->first;
                spare_bytes -= cap;
                spare.erase(it);
                owned.emplace(p, cap);
                ++hits;
                reused_bytes += n;
                if (zero) std::memset(p, 0, n);
                return p;
            }
            release(n);
            ++misses;
        }
        void* p = zero ? std::calloc(n, 1) : std::malloc(n);
        if (p != nullptr) owned.emplace(p, n);
        return p;
    }

    // Returns false when `p` is not one of this cache's large blocks.
    bool give_back(void* p) {
        std::lock_guard<std::mutex> lock(mu);
        auto it = owned.find(p);
        if (it == owned.end()) return false;
        std::size_t cap = it->second;
        owned.erase(it);
        if (open) {
            spare.emplace(cap, p);
            spare_bytes += cap;
        } else {
            std::free(p);
        }
        return true;
    }

    std::size_t capacity(void* p) {
        std::lock_guard<std::mutex> lock(mu);
        auto it = owned.find(p);
        return it == owned.end() ? 0 : it->second;
    }

    void close() {
        std::lock_guard<std::mutex> lock(mu);
        open = false;
        release(static_cast<std::size_t>(-1));
    }

    // Release every spare block; returns the bytes released.
    std::size_t trim() {
        std::lock_guard<std::mutex> lock(mu);
        const std::size_t before = spare_bytes;
        release(static_cast<std::size_t>(-1));
        return before;
    }
};

Cache* cache_of(void* ctx) { return static_cast<Cache*>(ctx); }

void* cache_malloc(void* ctx, size_t n) {
    Cache* c = cache_of(ctx);
    if (n < c->min_bytes) return std::malloc(n);
    return c->take(n, false);
}

void* cache_calloc(void* ctx, size_t nelem, size_t elsize) {
    Cache* c = cache_of(ctx);
    if (elsize != 0 && nelem > static_cast<size_t>(-1) / elsize) return nullptr;
    size_t n = nelem * elsize;
    if (n < c->min_bytes) return std::calloc(nelem, elsize);
    return c->take(n, true);
}

void cache_free(void* ctx, void* p, size_t size) {
    if (p == nullptr) return;
    Cache* c = cache_of(ctx);
    // Blocks the cache owns are always handed out for at least min_bytes (cache_realloc keeps
    // that), and NumPy passes the size it asked for: smaller ones are plain malloc blocks.
    if (size >= c->min_bytes && c->give_back(p)) return;
    std::free(p);
}

void* cache_realloc(void* ctx, void* p, size_t n) {
    Cache* c = cache_of(ctx);
    if (p == nullptr) return cache_malloc(ctx, n);
    std::size_t cap = c->capacity(p);
    if (cap == 0) {  // a plain malloc block: it stays one (its free goes to std::free)
        return std::realloc(p, n);
    }
    if (n <= cap && n >= c->min_bytes) return p;
    void* q = cache_malloc(ctx, n);
    if (q == nullptr) return nullptr;
    std::memcpy(q, p, n < cap ? n : cap);
    c->give_back(p);
    return q;
}

const char* const kCapsuleName = "mem_handler";

void destroy_handler(PyObject* capsule) {
    auto* h = static_cast<PyDataMem_Handler*>(PyCapsule_GetPointer(capsule, kCapsuleName));
    if (h == nullptr) {
        PyErr_Clear();
        return;
    }
    Cache* c = cache_of(h->allocator.ctx);
    c->close();
    delete c;
    delete h;
}

void numpy_api_ready() {
    static bool ready = false;
    if (!ready) {
        if (_import_array() < 0) throw py::error_already_set();
        ready = true;
    }
}

PyDataMem_Handler* handler_of(const py::capsule& capsule) {
    auto* h = static_cast<PyDataMem_Handler*>(PyCapsule_GetPointer(capsule.ptr(), kCapsuleName));
    if (h == nullptr) throw py::error_already_set();
    if (std::strcmp(h->name, "ctreg_array_cache") != 0)
        throw py::type_error("not a ctreg array cache handler");
    return h;
}

}  // namespace

void bind_memory(py::module_& m) {
    m.def(
        "array_cache_new",
        [](std::size_t min_bytes) {
            numpy_api_ready();
            auto* h = new PyDataMem_Handler();
            std::strncpy(h->name, "ctreg_array_cache", sizeof(h->name) - 1);
            h->version = 1;
            h->allocator = {new Cache(min_bytes), cache_malloc, cache_calloc, cache_realloc,
                            cache_free};
            PyObject* cap = PyCapsule_New(h, kCapsuleName, destroy_handler);
            if (cap == nullptr) {
                delete cache_of(h->allocator.ctx);
                delete h;
                throw py::error_already_set();
            }
            return py::reinterpret_steal<py::capsule>(cap);
        },
        py::arg("min_bytes"),
        "A NumPy memory handler (capsule) that reuses freed array buffers of at least "
        "min_bytes; install it with array_cache_install.");
    m.def(
        "array_cache_install",
        [](const py::capsule& handler) {
            numpy_api_ready();
            handler_of(handler);  // only a ctreg array cache
            PyObject* old = PyDataMem_SetHandler(handler.ptr());
            if (old == nullptr) throw py::error_already_set();
            return py::reinterpret_steal<py::object>(old);
        },
        py::arg("handler"),
        "Set NumPy's memory handler of the current context; returns the previous one.");
    m.def(
        "array_cache_restore",
        [](const py::object& previous) {
            numpy_api_ready();
            PyObject* old = PyDataMem_SetHandler(previous.ptr());
            if (old == nullptr) throw py::error_already_set();
            Py_DECREF(old);
        },
        py::arg("previous"), "Put back the handler array_cache_install returned.");
    m.def(
        "array_cache_close",
        [](const py::capsule& handler) { cache_of(handler_of(handler)->allocator.ctx)->close(); },
        py::arg("handler"),
        "Release the spare blocks; from now on freed blocks go straight back to the system.");
    m.def(
        "array_cache_trim",
        [](const py::capsule& handler) { return cache_of(handler_of(handler)->allocator.ctx)->trim(); },
        py::arg("handler"),
        "Release the spare blocks now (the cache stays open); returns the bytes released.");
    m.def(
        "array_cache_stats",
        [](const py::capsule& handler) {
            Cache* c = cache_of(handler_of(handler)->allocator.ctx);
            std::lock_guard<std::mutex> lock(c->mu);
            py::dict d;
            d["hits"] = c->hits;
            d["misses"] = c->misses;
            d["reused_bytes"] = c->reused_bytes;
            d["spare_bytes"] = c->spare_bytes;
            d["live_blocks"] = c->owned.size();
            d["open"] = c->open;
            return d;
        },
        py::arg("handler"), "Counters of the cache: hits, misses, reused and spare bytes.");
}

}  // namespace ctreg::bind
