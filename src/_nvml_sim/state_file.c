/* The state file on disk: freshness checks, reloads, atomic rewrites and the flock beside it. */
#include "sim.h"

/* ------------------------------------------------------------------ file state */

static struct sim_state g_states[2]; /* the current one and the one a reload parses into */
struct sim_state *g_cur = &g_states[0];

struct file_sig {
    int valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static char g_path[PATH_LEN];
static char g_lock_path[PATH_LEN + 8];
static int g_lock_fd = -1;
static struct file_sig g_sig;        /* of the file g_cur was read from or written to */
static struct timespec g_last_check; /* last freshness stat() by a read-only call */
static struct state_error g_error;   /* why the last read of the file failed; line 0 + "" if not */

__attribute__((format(printf, 1, 2))) static void file_error(const char *fmt, ...)
{
    va_list ap;
    g_error.line = 0;
    va_start(ap, fmt);
    vsnprintf(g_error.reason, sizeof g_error.reason, fmt, ap);
    va_end(ap);
    sim_debug("%s: %s", g_path, g_error.reason);
}

void state_file_clear_error(void)
{
    g_error.line = 0;
    g_error.reason[0] = '\0';
}

/* Why the state in use is not the file's current content; 0 if it is. Caller holds the mutex. */
int state_file_last_error(char *reason, unsigned int cap, unsigned int *line)
{
    if (g_error.reason[0] == '\0')
        return 0;
    if (reason != NULL && cap > 0)
        copy_string(reason, cap, g_error.reason);
    if (line != NULL)
        *line = g_error.line;
    return 1;
}

/* ------------------------------------------------------------------ the state file */

static void sig_from_stat(const struct stat *sb, struct file_sig *sig)
{
    sig->valid = 1;
    sig->dev = sb->st_dev;
    sig->ino = sb->st_ino;
    sig->size = sb->st_size;
    sig->mtime = sb->st_mtim;
}

static int sig_equal(const struct file_sig *a, const struct file_sig *b)
{
    return a->valid && b->valid && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* O_NONBLOCK: a FIFO put in the file's place must not hang the open; it is then refused. */
static int read_state_file(const char *path, struct sim_state *st, struct file_sig *sig)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        file_error("cannot open: %s", strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        file_error("cannot stat: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)(64 * MIB)) {
        file_error(S_ISREG(sb.st_mode) ? "larger than 64 MiB" : "not a regular file");
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size, got = 0;
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        file_error("out of memory");
        close(fd);
        return -1;
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    struct state_error err = {0, ""};
    int rc = -1;
    if (got != len)
        file_error("changed size while being read");
    else if ((rc = parse_state(buf, len, st, &err)) != 0)
        g_error = err;
    free(buf);
    if (rc == 0) {
        sig_from_stat(&sb, sig);
        state_file_clear_error();
    }
    return rc;
}

/* Parse the file into the spare buffer, carry the handles over, make it current. */
int state_file_reload(void)
{
    struct sim_state *next = g_cur == &g_states[0] ? &g_states[1] : &g_states[0];
    struct file_sig sig;
    if (read_state_file(g_path, next, &sig) != 0) {
        sim_debug("cannot read %s", g_path);
        return -1;
    }
    carry_handles(g_cur, next);
    g_cur = next;
    g_sig = sig;
    return 0;
}

/* Re-read the file if its (device, inode, size, mtime) changed. */
int state_file_refresh(void)
{
    struct stat sb;
    struct file_sig now;
    if (stat(g_path, &sb) != 0) {
        file_error("cannot read: %s", strerror(errno));
        return -1;
    }
    sig_from_stat(&sb, &now);
    if (sig_equal(&now, &g_sig)) {
        state_file_clear_error(); /* the file is again the one in use */
        return 0;
    }
    return state_file_reload();
}

/* Read-only calls: at most one stat() per millisecond; on failure keep the last good state. */
void state_file_refresh_for_read(void)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return;
    int64_t elapsed_ns = (int64_t)(now.tv_sec - g_last_check.tv_sec) * 1000000000LL +
                         (now.tv_nsec - g_last_check.tv_nsec);
    if (elapsed_ns >= 0 && elapsed_ns < 1000000LL)
        return;
    g_last_check = now;
    if (state_file_refresh() != 0)
        sim_debug("keeping the last good state of %s", g_path);
}

/* "-" for none, else the items joined by commas: spans as START:SIZE, or plain numbers. */
static void format_items(char *buf, size_t cap, const struct sim_span *spans,
                         const uint32_t *values, uint32_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        copy_string(buf, cap, "-");
        return;
    }
    for (uint32_t i = 0; i < n && used < cap; i++) {
        const char *sep = i ? "," : "";
        int w = spans ? snprintf(buf + used, cap - used, "%s%u:%u", sep, spans[i].start,
                                 spans[i].size)
                      : snprintf(buf + used, cap - used, "%s%u", sep, values[i]);
        if (w < 0)
            return;
        used += (size_t)w;
    }
}

static void write_records(FILE *f, const struct sim_state *st)
{
    char spans[MAX_PLACEMENTS * 24], order[MAX_PLACEMENTS * 12];
    fputs("# migkit simulated NVML node; format: docs/simulator-state-format.md. "
          "Edit only holding <file>.lock.\n",
          f);
    fputs("migkit-sim version=1\n", f);
    fprintf(f, "driver version=%s cuda=%s\n", st->driver, st->cuda);
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        fprintf(f,
                "gpu index=%u uuid=%s bus=%s pci=0x%08X subsys=0x%08X memory=%llu arch=%u "
                "mig_capable=%u mode=%u pending=%u max_mig=%u minor=%u name=%s\n",
                gpu->index, gpu->uuid, gpu->bus, gpu->pci, gpu->subsys,
                (unsigned long long)gpu->memory, gpu->arch, gpu->mig_capable, gpu->mode,
                gpu->pending, gpu->max_mig, gpu->minor, gpu->name);
    }
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        for (uint32_t p = 0; p < gpu->ngips; p++) {
            const struct sim_gip *gip = &gpu->gips[p];
            format_items(spans, sizeof spans, gip->placements, NULL, gip->nplacements);
            format_items(order, sizeof order, NULL, gip->order, gip->norder);
            fprintf(f,
                    "gip gpu=%u index=0x%X id=%u slices=%u mslices=%u instances=%u memory=%llu "
                    "devmem=%llu sm=%u ce=%u dec=%u enc=%u jpeg=%u ofa=%u p2p=%u caps=%u "
                    "placements=%s order=%s name=%s\n",
                    g, gip->index, gip->id, gip->slices, gip->mslices, gip->instances,
                    (unsigned long long)gip->memory, (unsigned long long)gip->devmem, gip->sm,
                    gip->ce, gip->dec, gip->enc, gip->jpeg, gip->ofa, gip->p2p, gip->caps, spans,
                    order, gip->name);
            for (uint32_t c = 0; c < gip->ncips; c++) {
                const struct sim_cip *cip = &gip->cips[c];
                format_items(spans, sizeof spans, cip->placements, NULL, cip->nplacements);
                fprintf(f,
                        "cip gpu=%u gip=%u index=0x%X id=%u slices=%u instances=%u sm=%u ce=%u "
                        "dec=%u enc=%u jpeg=%u ofa=%u caps=%u placements=%s name=%s\n",
                        g, gip->id, cip->index, cip->id, cip->slices, cip->instances, cip->sm,
                        cip->ce, cip->dec, cip->enc, cip->jpeg, cip->ofa, cip->caps, spans,
                        cip->name);
            }
        }
    }
    for (uint32_t g = 0; g < st->ngpus; g++) {
        const struct sim_gpu *gpu = &st->gpus[g];
        for (uint32_t id = 0; id < MAX_GIS; id++) {
            const struct sim_gi *gi = &gpu->gis[id];
            if (!gi->live)
                continue;
            fprintf(f, "gi gpu=%u id=%u profile=%u start=%u size=%u busy=%llu\n", g, id,
                    gi->profile, gi->start, gi->size, (unsigned long long)gi->busy);
            for (uint32_t c = 0; c < MAX_CIS; c++) {
                const struct sim_ci *ci = &gi->cis[c];
                if (ci->live)
                    fprintf(f, "ci gpu=%u gi=%u id=%u profile=%u start=%u size=%u busy=%llu\n", g,
                            id, c, ci->profile, ci->start, ci->size, (unsigned long long)ci->busy);
            }
        }
    }
    for (uint32_t i = 0; i < st->ncalls; i++) {
        if (i % 6 == 0)
            fputs(i ? "\ncalls" : "calls", f);
        fprintf(f, " %s=%llu", st->calls[i].name, (unsigned long long)st->calls[i].count);
    }
    if (st->ncalls)
        fputc('\n', f);
    uint32_t written = 0;
    for (uint32_t i = 0; i < st->ncalls; i++) {
        if (st->calls[i].charged_ns == 0)
            continue;
        if (written++ % 6 == 0)
            fputs(written > 1 ? "\ncharged" : "charged", f);
        fprintf(f, " %s=%llu", st->calls[i].name, (unsigned long long)st->calls[i].charged_ns);
    }
    if (written)
        fputc('\n', f);
}

/*
 * <state>.tmp.<pid>, created afresh: O_EXCL|O_NOFOLLOW, so a symlink planted there is never
 * followed. A leftover of ours (a killed writer with this pid) is removed first, which removes
 * a symlink itself, never its target. The file gets the state file's permission mode.
 */
static int open_temp_file(const char *tmp)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    struct stat sb;
    int fd = open(tmp, flags, 0666);
    if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
        fd = open(tmp, flags, 0666);
    if (fd >= 0 && stat(g_path, &sb) == 0 && fchmod(fd, sb.st_mode & 07777) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

/* Write g_cur through <state>.tmp.<pid> + rename; the caller holds the lock. */
int state_file_write(void)
{
    char tmp[PATH_LEN + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", g_path, (long)getpid());
    int fd = open_temp_file(tmp);
    if (fd < 0) {
        sim_debug("cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    write_records(f, g_cur);
    /* File timestamps tick coarsely (a few ms) and a freed inode is soon reused, so two
     * writes close together could leave (inode, size, mtime) unchanged and readers would miss
     * the second. Every writer therefore makes the mtime strictly larger than the last one. */
    struct timespec times[2];
    int ok = fflush(f) == 0 && !ferror(f) && clock_gettime(CLOCK_REALTIME, &times[1]) == 0;
    if (ok && g_sig.valid &&
        (times[1].tv_sec < g_sig.mtime.tv_sec ||
         (times[1].tv_sec == g_sig.mtime.tv_sec && times[1].tv_nsec <= g_sig.mtime.tv_nsec))) {
        times[1] = g_sig.mtime;
        if (++times[1].tv_nsec >= 1000000000L) {
            times[1].tv_nsec = 0;
            times[1].tv_sec++;
        }
    }
    times[0] = times[1];
    struct stat sb;
    ok = ok && futimens(fileno(f), times) == 0 && fstat(fileno(f), &sb) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, g_path) != 0) {
        sim_debug("cannot write %s", g_path);
        unlink(tmp);
        return -1;
    }
    sig_from_stat(&sb, &g_sig);
    return 0;
}

int lock_file(void)
{
    if (g_lock_fd < 0) {
        g_lock_fd = open(g_lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (g_lock_fd < 0)
            return -1;
    }
    while (flock(g_lock_fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

void unlock_file(void)
{
    if (g_lock_fd >= 0 && flock(g_lock_fd, LOCK_UN) != 0)
        sim_debug("cannot unlock %s", g_lock_path);
}

void close_lock_file(void)
{
    if (g_lock_fd >= 0 && close(g_lock_fd) != 0)
        sim_debug("cannot close %s", g_lock_path);
    g_lock_fd = -1;
}

/* Move this process's call counts into the state that is about to be written. */

/* Point the simulator at the state file `path` (the lock file beside it) and read it. */
int state_file_open(const char *path)
{
    if (strcmp(path, g_path) != 0) {
        close_lock_file();
        copy_string(g_path, sizeof g_path, path);
        snprintf(g_lock_path, sizeof g_lock_path, "%s.lock", g_path);
        g_sig.valid = 0;
    }
    if (state_file_reload() != 0)
        return -1;
    if (clock_gettime(CLOCK_MONOTONIC, &g_last_check) != 0)
        memset(&g_last_check, 0, sizeof g_last_check);
    return 0;
}

/*
 * Every walk over the node (migkit's snapshot, pynvml, nvidia-smi) starts by counting the
 * GPUs, so that call always looks at the state file: a walk sees changes made by other
 * processes (or by editing the file) just before it, not up to a millisecond later.
 */
void state_file_refresh_now(void)
{
    if (clock_gettime(CLOCK_MONOTONIC, &g_last_check) != 0)
        memset(&g_last_check, 0, sizeof g_last_check);
    if (state_file_refresh() != 0)
        sim_debug("keeping the last good state of %s", g_path);
}

/* Whether a node is open and its file still exists (counts are flushed only then). */
int state_file_exists(void)
{
    struct stat sb;
    return g_path[0] != '\0' && stat(g_path, &sb) == 0;
}
