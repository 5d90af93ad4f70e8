/*
 * The NBD server's native loop for aligned READs and WRITEs up to 1 MiB: parse the request headers
 * already buffered, decrypt (large reads straight from a mapping of the image) or encrypt +
 * pwrite under the sector lock, and write the replies, for a batch of requests in one call
 * from Python.
 *
 * Why: a 4 KiB request costs a few microseconds of system calls and AES but, served in
 * Python, ~60% of the server's CPU went to the interpreter around them (perf, 4 KiB random
 * reads, 32 in flight). Nothing here decides anything Python does not: every request this loop
 * is not sure of (another command, a flag, an unaligned or out-of-range or zero-length
 * request, a payload not yet whole, a failed or short system call, a read of an image
 * truncated under it) stops the batch *before* it, untouched, and the Python session serves
 * it exactly as before, errors included. So the replies on the wire are the same bytes either
 * way, and the tests run both paths.
 *
 * The sector cipher is the XTS loop of libssegw_xts.so (xts_sectors.c), reached through the
 * function pointer Python hands over with that library's contexts, so this library needs no
 * OpenSSL of its own. Loaded with ctypes by adapters/block/nbd_fastpath.py; built by the
 * Makefile (`make deps`): cc -O2 -shared -fPIC nbd_fastpath.c.
 *
 * One `struct ssegw_nbd` per connection, used by one thread at a time.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define SECTOR_SIZE 512
#define REQUEST_SIZE 28
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define STRUCTURED_REPLY_MAGIC 0x668E33EFu
#define CMD_READ 0
#define CMD_WRITE 1
#define FLAG_FUA 1u
#define FLAG_DF 4u
#define REPLY_FLAG_DONE 1u
#define REPLY_TYPE_OFFSET_DATA 1u
#define SIMPLE_REPLY_SIZE 16
#define READ_HEADER_SIZE 28 /* a structured chunk header and the data's offset */

/* WRITEs larger than this are left to Python (whose transport receives them straight into a
 * buffer of their own); also the size of the per-connection scratch buffer a write is
 * encrypted into. nbdcopy writes 256 KiB at a time: served in Python, each one paid for a
 * fresh zeroed buffer and the interpreter around it (~27% of the server's CPU, perf). The
 * payload must be whole in the caller's receive buffer, which the transport sees to. */
#define MAX_FAST_WRITE (1 << 20)
/* READs up to this size are served here: decrypted in place in the caller's reply buffer.
 * nbdcopy reads 256 KiB at a time; served in Python each one paid for two fresh buffers and
 * the interpreter around them. */
#define MAX_FAST_READ (1 << 20)
/* WRITEs at least this big take in what the client has sent since, before they are encrypted
 * (see take_more); for smaller ones the extra recv would cost more than it saves. */
#define EARLY_RECV_WRITE (64 << 10)

typedef int (*xts_sectors_fn)(void *ctx, uint64_t first, size_t count, const unsigned char *src,
                              unsigned char *dst);

struct ssegw_nbd {
    int fd;
    uint64_t base; /* byte offset of the payload in the image */
    uint64_t size; /* bytes of payload */
    int structured;
    xts_sectors_fn sectors;
    void *dec, *enc; /* contexts of the XTS library, this connection's own */
    unsigned char *scratch;
    unsigned char *map; /* the image, read-only, or NULL: READs then pread (see map_image) */
    size_t map_len;
    uint64_t mapped_reads; /* bytes read through this mapping (see REMAP_AFTER) */
};

/*
 * READs decrypt straight from a shared read-only mapping of the image (the page cache itself)
 * into the reply buffer. Through pread the data was first copied out of the page cache into
 * the reply buffer and then decrypted in place, and that copy was ~15% of the server's CPU
 * under nbdcopy reads. A/B against pread, 10 rounds of nbdcopy 1 GiB: 0.45 vs 0.51 s of
 * server CPU per GiB, throughput +7%, with the remapping below included. Writes still go
 * through pwrite; the mapping shares the page cache with them and with the other worker
 * processes, so a read sees every acknowledged write, as with pread.
 *
 * Page tables are the mapping's other cost: they grow with what was touched (8 bytes a page,
 * kept while it stays mapped: a 1 TiB volume read once through one long-lived connection would
 * leave 2 GiB of them). So the mapping is made again after every REMAP_AFTER bytes read
 * through it (munmap gives them back; at most 512 KiB of them for sequential reads, 16 MiB
 * for 64 KiB reads scattered over a huge image), and small READs (under MAPPED_READ_MIN),
 * where the copy is cheap but random ones would each fill a page-table page, still pread.
 * (Unmapping is not free: a whole-image mapping never remapped measured ~7% faster, but only
 * because it paid for its unmapping after the client had its data.)
 *
 * The price of a mapping: touching a page beyond the end of a file that has been truncated
 * under it raises SIGBUS, which would kill the server where pread just returns short. So a
 * mapped read runs under a per-thread guard: the SIGBUS handler (installed once, chaining to
 * whatever handler was there before for every other SIGBUS) jumps back out of the read, which
 * is then left to Python: its pread sees the truncation and answers EIO as before. The
 * connection drops its mapping then and preads from there on.
 */
#define MAPPED_READ_MIN (64 << 10)
#define REMAP_AFTER ((uint64_t)256 << 20)

/* initial-exec: read from the signal handler, where the lazy allocation a dlopen'ed library's
 * thread-local variable may otherwise need on first use is not safe. */
static __thread sigjmp_buf *mapped_read_guard __attribute__((tls_model("initial-exec")));
static struct sigaction previous_sigbus;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;
static int sigbus_installed;

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    sigjmp_buf *guard = mapped_read_guard;

    if (guard != NULL) {
        mapped_read_guard = NULL;
        siglongjmp(*guard, 1);
    }
    /* Not ours: what would have happened without us. */
    if (previous_sigbus.sa_flags & SA_SIGINFO) {
        previous_sigbus.sa_sigaction(sig, info, uctx);
    } else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
        previous_sigbus.sa_handler(sig);
    } else {
        /* The default action (ignoring a fault would only repeat it): the process ends with
         * SIGBUS, as it would have without us. Not blocked here (SA_NODEFER), so it is now. */
        signal(SIGBUS, SIG_DFL);
        raise(SIGBUS);
    }
}

static void install_sigbus(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    /* SA_NODEFER: SIGBUS stays unblocked after the jump out of the handler, so sigsetjmp
     * need not save and restore the signal mask (a system call per READ). */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigbus_installed = sigaction(SIGBUS, &sa, &previous_sigbus) == 0;
}

static void map_image(struct ssegw_nbd *c)
{
    void *m;

    c->map = NULL;
    if (c->base + c->size == 0 || c->base + c->size > SIZE_MAX)
        return;
    pthread_once(&sigbus_once, install_sigbus);
    if (!sigbus_installed)
        return;
    m = mmap(NULL, (size_t)(c->base + c->size), PROT_READ, MAP_SHARED, c->fd, 0);
    if (m == MAP_FAILED)
        return;
    c->map = m;
    c->map_len = (size_t)(c->base + c->size);
    c->mapped_reads = 0;
}

static void unmap_image(struct ssegw_nbd *c)
{
    if (c->map != NULL)
        munmap(c->map, c->map_len);
    c->map = NULL;
}

/* Sectors [offset, offset + length) of the mapped image, decrypted into `data`; 0 if the
 * image ended under them (the mapping is dropped then) or the cipher failed. */
static int decrypt_mapped(struct ssegw_nbd *c, uint64_t offset, uint32_t length,
                          unsigned char *data)
{
    sigjmp_buf guard;
    int ok;

    if (sigsetjmp(guard, 0) != 0) { /* SIGBUS: the image is shorter than it was */
        unmap_image(c);
        return 0;
    }
    mapped_read_guard = &guard;
    ok = c->sectors(c->dec, offset / SECTOR_SIZE, length / SECTOR_SIZE,
                    c->map + c->base + offset, data);
    mapped_read_guard = NULL;
    return ok == 1;
}

/* Bumped whenever a signature or a limit Python relies on changes (see nbd_fastpath.py). */
int ssegw_nbd_abi(void)
{
    return 4;
}

struct ssegw_nbd *ssegw_nbd_new(int fd, uint64_t base, uint64_t size, int structured,
                                void *sectors, void *dec, void *enc)
{
    struct ssegw_nbd *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->scratch = malloc(MAX_FAST_WRITE);
    if (c->scratch == NULL) {
        free(c);
        return NULL;
    }
    c->fd = fd;
    c->base = base;
    c->size = size;
    c->structured = structured ? 1 : 0;
    c->sectors = (xts_sectors_fn)sectors;
    c->dec = dec;
    c->enc = enc;
    map_image(c);
    return c;
}

void ssegw_nbd_free(struct ssegw_nbd *c)
{
    if (c == NULL)
        return;
    unmap_image(c);
    /* The scratch buffer held what was written (encrypted, but no need to leave it). */
    explicit_bzero(c->scratch, MAX_FAST_WRITE);
    free(c->scratch);
    free(c);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static int sector_lock(int fd, short type, uint64_t start, uint64_t len)
{
    struct flock fl;
    int r;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)start;
    fl.l_len = (off_t)len;
    do
        r = fcntl(fd, F_SETLKW, &fl);
    while (r == -1 && errno == EINTR);
    return r == 0;
}

/* An aligned, in-range, non-empty request of at most `max` bytes. */
static int fits(const struct ssegw_nbd *c, uint64_t offset, uint32_t length, uint32_t max)
{
    return length != 0 && length <= max && offset % SECTOR_SIZE == 0
        && length % SECTOR_SIZE == 0 && offset <= c->size && length <= c->size - offset;
}

/* One READ into `out` (header then data); 0 if it must be left to Python. */
static size_t serve_read(struct ssegw_nbd *c, const unsigned char *req, uint32_t flags,
                         uint64_t offset, uint32_t length, unsigned char *out, size_t room)
{
    size_t header = c->structured ? READ_HEADER_SIZE : SIMPLE_REPLY_SIZE;
    unsigned char *data = out + header;
    ssize_t n;

    if ((flags & ~FLAG_DF) != 0 || ((flags & FLAG_DF) && !c->structured)
            || !fits(c, offset, length, MAX_FAST_READ) || room < header + length)
        return 0;
    if (c->map != NULL && length >= MAPPED_READ_MIN && c->mapped_reads >= REMAP_AFTER) {
        unmap_image(c);
        map_image(c); /* NULL if that failed: pread from then on */
    }
    if (c->map != NULL && length >= MAPPED_READ_MIN) {
        if (!decrypt_mapped(c, offset, length, data))
            return 0;
        c->mapped_reads += length;
    } else {
        n = pread(c->fd, data, length, (off_t)(c->base + offset));
        if (n != (ssize_t)length)
            return 0;
        if (c->sectors(c->dec, offset / SECTOR_SIZE, length / SECTOR_SIZE, data, data) != 1)
            return 0;
    }
    if (c->structured) {
        put32(out, STRUCTURED_REPLY_MAGIC);
        out[4] = 0;
        out[5] = REPLY_FLAG_DONE;
        out[6] = 0;
        out[7] = REPLY_TYPE_OFFSET_DATA;
        memcpy(out + 8, req + 8, 8); /* the cookie, as sent */
        put32(out + 16, 8 + length);
        put64(out + 20, offset);
    } else {
        put32(out, SIMPLE_REPLY_MAGIC);
        put32(out + 4, 0);
        memcpy(out + 8, req + 8, 8);
    }
    return header + length;
}

/* One WRITE whose payload follows `req`; 0 if it must be left to Python. */
static size_t serve_write(struct ssegw_nbd *c, const unsigned char *req, uint32_t flags,
                          uint64_t offset, uint32_t length, unsigned char *out, size_t room,
                          int read_only)
{
    uint64_t pos = c->base + offset;
    struct iovec iov;
    ssize_t n;

    if ((flags & ~FLAG_FUA) != 0 || read_only || !fits(c, offset, length, MAX_FAST_WRITE)
            || room < SIMPLE_REPLY_SIZE)
        return 0;
    if (c->sectors(c->enc, offset / SECTOR_SIZE, length / SECTOR_SIZE, req + REQUEST_SIZE,
                   c->scratch) != 1)
        return 0;
    /* The same byte-range lock as Volume._locked: excludes another worker process's
     * read-modify-write of a partial sector in this range. */
    if (!sector_lock(c->fd, F_WRLCK, pos, length))
        return 0;
    if (flags & FLAG_FUA) {
        /* RWF_DSYNC: this write durable before it returns, as Volume does for FUA. */
        iov.iov_base = c->scratch;
        iov.iov_len = length;
        n = pwritev2(c->fd, &iov, 1, (off_t)pos, RWF_DSYNC);
    } else {
        n = pwrite(c->fd, c->scratch, length, (off_t)pos);
    }
    sector_lock(c->fd, F_UNLCK, pos, length);
    if (n != (ssize_t)length)
        return 0; /* Python writes it again and reports the error, if it is one */
    put32(out, SIMPLE_REPLY_MAGIC);
    put32(out + 4, 0);
    memcpy(out + 8, req + 8, 8);
    return SIMPLE_REPLY_SIZE;
}

/*
 * One non-blocking recv of what the client has sent meanwhile, appended to in[*in_len,
 * in_cap). Why: over a Unix socket the client can queue no more than its send buffer (208 KiB
 * by default, less than one 256 KiB nbdcopy write), so while a write is encrypted and written
 * the client sat blocked with a full buffer, and then the server waited for it: the two took
 * turns (perf: the machine ~40% idle). Taking its bytes before the work lets it send the next
 * request meanwhile. On EOF or an error (0, -1) it stops trying; the transport's own read
 * finds the same condition and reports it.
 */
static void take_more(int sock, unsigned char *in, size_t *in_len, size_t in_cap, size_t *got,
                      int *dry)
{
    ssize_t n;

    if (sock < 0 || *dry || *in_len >= in_cap)
        return;
    do
        n = recv(sock, in + *in_len, in_cap - *in_len, MSG_DONTWAIT);
    while (n == -1 && errno == EINTR);
    if (n <= 0) {
        *dry = 1;
        return;
    }
    *in_len += (size_t)n;
    *got += (size_t)n;
}

/*
 * Serves at most `max_requests` of the requests in in[0, in_len), in order, stopping at the
 * first it must leave to Python. res[0]: bytes of `in` consumed, res[1]: bytes of replies
 * written to `out`, res[2]: requests served, res[3]: 1 if any of them was a write, res[4]:
 * bytes received from `sock` (-1: never) into in[in_len, in_cap) before large writes (see
 * take_more); they follow the ones given, and the caller counts them as buffered.
 */
void ssegw_nbd_serve(struct ssegw_nbd *c, unsigned char *in, size_t in_len, size_t in_cap,
                     int sock, unsigned char *out, size_t out_cap, int max_requests,
                     int read_only, size_t *res)
{
    size_t used = 0, made = 0, served = 0, wrote = 0, got = 0;
    int dry = 0;

    while ((int)served < max_requests && in_len - used >= REQUEST_SIZE) {
        const unsigned char *req = in + used;
        uint32_t flags = (uint32_t)req[4] << 8 | req[5];
        uint32_t type = (uint32_t)req[6] << 8 | req[7];
        uint64_t offset = be64(req + 16);
        uint32_t length = be32(req + 24);
        size_t n;

        if (be32(req) != REQUEST_MAGIC)
            break;
        if (type == CMD_READ) {
            n = serve_read(c, req, flags, offset, length, out + made, out_cap - made);
            if (n == 0)
                break;
            used += REQUEST_SIZE;
        } else if (type == CMD_WRITE) {
            if (length >= EARLY_RECV_WRITE)
                take_more(sock, in, &in_len, in_cap, &got, &dry);
            if (in_len - used - REQUEST_SIZE < length)
                break; /* the payload is not all here yet */
            n = serve_write(c, req, flags, offset, length, out + made, out_cap - made,
                            read_only);
            if (n == 0)
                break;
            used += REQUEST_SIZE + length;
            wrote = 1;
        } else {
            break;
        }
        made += n;
        served++;
    }
    res[0] = used;
    res[1] = made;
    res[2] = served;
    res[3] = wrote;
    res[4] = got;
}
