#include "daemon_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc_fd.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int raw_socket(const struct daemon *d)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", d->socket);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int raw_send_bytes(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int raw_send(int fd, const struct dsd_ipc_msg *m)
{
    struct dsd_ipc_buf b = {0};
    struct dsd_err err;
    if (dsd_ipc_encode(&b, m, DSD_IPC_FRAME_CEIL, &err)) {
        fprintf(stderr, "encode: %s\n", err.msg);
        return -1;
    }
    int rc = raw_send_bytes(fd, b.data, b.len);
    dsd_ipc_buf_free(&b);
    return rc;
}

/* Reads n bytes within timeout_ms; once a byte has come, the rest may take up to 10 s more,
 * so a short timeout never leaves the stream in the middle of a frame. */
static int read_full(int fd, void *p, size_t n, int timeout_ms)
{
    char *b = p;
    double deadline = now_s() + timeout_ms / 1000.0;
    bool started = false;
    while (n) {
        if (started && deadline < now_s() + 10.0)
            deadline = now_s() + 10.0;
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        int pr = poll(&pf, 1, left);
        if (pr == 0)
            return -ETIMEDOUT;
        ssize_t r = recv(fd, b, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EPIPE;
        b += r;
        n -= (size_t)r;
        started = true;
    }
    return 0;
}

int raw_recv(int fd, struct dsd_ipc_msg *m, int timeout_ms)
{
    unsigned char pre[4];
    memset(m, 0, sizeof *m);
    int rc = read_full(fd, pre, 4, timeout_ms);
    if (rc)
        return rc;
    uint32_t len = (uint32_t)pre[0] | (uint32_t)pre[1] << 8 | (uint32_t)pre[2] << 16 | (uint32_t)pre[3] << 24;
    if (len > DSD_IPC_FRAME_CEIL)
        return -EPROTO;
    void *body = malloc(len ? len : 1);
    if ((rc = read_full(fd, body, len, timeout_ms > 10000 ? timeout_ms : 10000))) {
        free(body);
        return rc;
    }
    struct dsd_ipc_fail fail;
    rc = dsd_ipc_decode(body, len, DSD_IPC_TO_CLIENT, m, &fail);
    free(body);
    if (rc) {
        fprintf(stderr, "undecodable reply: %s\n", fail.err.msg);
        return -EPROTO;
    }
    return 0;
}

int raw_connect(const struct daemon *d)
{
    int fd = raw_socket(d);
    if (fd < 0)
        return -1;
    struct dsd_ipc_msg h = { .type = DSD_IPC_HELLO, .id = 1 };
    h.hello.min_version = h.hello.max_version = DSD_IPC_VERSION;
    h.hello.client = dsd_ipc_s("integration-test");
    struct dsd_ipc_msg r;
    if (raw_send(fd, &h) || raw_recv(fd, &r, 10000) || r.type != DSD_IPC_HELLO_OK) {
        dsd_ipc_msg_free(&r);
        close(fd);
        return -1;
    }
    dsd_ipc_msg_free(&r);
    return fd;
}

int raw_wait_done(int fd, uint64_t id, struct dsd_ipc_msg *last, uint32_t *ids, int *n_ids, int max_ids,
                  int timeout_ms)
{
    if (n_ids)
        *n_ids = 0;
    for (;;) {
        struct dsd_ipc_msg m;
        int rc = raw_recv(fd, &m, timeout_ms);
        if (rc)
            return rc;
        if (m.id != id && m.id != 0) {
            dsd_ipc_msg_free(&m);
            continue;
        }
        if (m.type == DSD_IPC_TOKENS && ids) {
            for (uint32_t i = 0; i < m.tokens.n_ids && *n_ids < max_ids; i++)
                ids[(*n_ids)++] = m.tokens.ids[i];
        }
        if (m.type == DSD_IPC_TOKENS || m.type == DSD_IPC_ACCEPTED) {
            dsd_ipc_msg_free(&m);
            continue;
        }
        int type = (int)m.type;
        if (last)
            *last = m;
        else
            dsd_ipc_msg_free(&m);
        return type;
    }
}

bool daemon_alive(struct daemon *d)
{
    return d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == 0;
}

void daemon_print_log(const struct daemon *d)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- deepseekd log (%s)\n", d->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

int daemon_start(struct daemon *d, const char *binary, const char *model, const char *const *extra, int timeout_s)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/dsd_itest_XXXXXX");
    if (!mkdtemp(d->dir))
        return -1;
    snprintf(d->socket, sizeof d->socket, "%s/sock", d->dir);
    snprintf(d->log, sizeof d->log, "%s/log", d->dir);
    const char *argv[64];
    int n = 0;
    argv[n++] = binary;
    argv[n++] = "--model";
    argv[n++] = model;
    argv[n++] = "--socket";
    argv[n++] = d->socket;
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    /* $DSD_TEST_DAEMON_ARGS: more options for every daemon a test starts, e.g. "--backend
     * cuda" to run the integration tests on a GPU host (docs/TESTING.md) */
    char more[512];
    const char *env = getenv("DSD_TEST_DAEMON_ARGS");
    snprintf(more, sizeof more, "%s", env ? env : "");
    for (char *save = NULL, *t = strtok_r(more, " ", &save); t && n < 62; t = strtok_r(NULL, " ", &save))
        argv[n++] = t;
    argv[n] = NULL;
    d->pid = fork();
    if (d->pid == 0) {
        int lf = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lf, 2);
        dup2(lf, 1);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    double deadline = now_s() + timeout_s;
    while (now_s() < deadline) {
        if (!daemon_alive(d)) {
            fprintf(stderr, "deepseekd exited during start-up\n");
            daemon_print_log(d);
            d->pid = 0;
            return -1;
        }
        int fd = raw_connect(d);
        if (fd >= 0) {
            struct dsd_ipc_msg h = { .type = DSD_IPC_HEALTH, .id = 2 }, r;
            int ok = raw_send(fd, &h) == 0 && raw_recv(fd, &r, 5000) == 0 && r.type == DSD_IPC_HEALTH_OK &&
                     r.health_ok.status == DSD_IPC_STATUS_OK;
            dsd_ipc_msg_free(&r);
            close(fd);
            if (ok)
                return 0;
        }
        usleep(50000);
    }
    fprintf(stderr, "deepseekd did not become ready in %d s\n", timeout_s);
    daemon_print_log(d);
    return -1;
}

int daemon_stop(struct daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 600; i++) {
        pid_t w = waitpid(d->pid, &status, WNOHANG);
        if (w == d->pid) {
            d->pid = 0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                daemon_print_log(d);    /* what went wrong, sanitizer reports included */
            char cmd[400];
            snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
            if (system(cmd) != 0) {
                /* leave it */
            }
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(50000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

struct dsd_ipc_msg raw_generate_msg(uint64_t id, const uint32_t *prompt, int n_prompt, int max_tokens)
{
    struct dsd_ipc_msg m = { .type = DSD_IPC_GENERATE, .id = id };
    dsd_ipc_generate_default(&m.generate);
    m.generate.prompt.kind = DSD_IPC_PROMPT_TOKENS;
    m.generate.prompt.tokens = prompt;
    m.generate.prompt.n_tokens = (uint32_t)n_prompt;
    m.generate.sampling.temperature = 0;
    m.generate.sampling.max_tokens = (uint32_t)max_tokens;
    m.generate.sampling.ignore_eos = true;
    return m;
}

int raw_cancel_mid_stream(int fd, uint64_t id, const uint32_t *prompt, int n_prompt)
{
    struct dsd_ipc_msg m = raw_generate_msg(id, prompt, n_prompt, 100000);
    if (raw_send(fd, &m))
        return -1;
    struct dsd_ipc_msg r;
    int tokens = 0;
    while (tokens < 3 && raw_recv(fd, &r, 20000) == 0) {      /* wait until it streams */
        tokens += r.type == DSD_IPC_TOKENS;
        dsd_ipc_msg_free(&r);
    }
    struct dsd_ipc_msg c = { .type = DSD_IPC_CANCEL, .id = id }, done;
    if (raw_send(fd, &c) || raw_wait_done(fd, id, &done, NULL, NULL, 0, 20000) != DSD_IPC_DONE)
        return -1;
    int finish = (int)done.done.finish;
    dsd_ipc_msg_free(&done);
    return finish;
}

int64_t raw_stat(int fd, const char *name)
{
    struct dsd_ipc_msg q = { .type = DSD_IPC_STATS, .id = 99 }, r;
    if (raw_send(fd, &q) || raw_wait_done(fd, 99, &r, NULL, NULL, 0, 10000) != DSD_IPC_STATS_OK)
        return -1;
    int64_t v = -1;
    for (uint32_t i = 0; i < r.stats_ok.n_stats; i++)
        if (strcmp(r.stats_ok.stats[i].key.ptr, name) == 0)
            v = r.stats_ok.stats[i].i;
    dsd_ipc_msg_free(&r);
    return v;
}

long daemon_rss_kib(const struct daemon *d)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

int raw_shm_attach(int fd, int memfd, uint32_t *code)
{
    struct dsd_ipc_msg a = { .type = DSD_IPC_SHM_ATTACH, .id = 50 };
    struct dsd_ipc_buf b = {0};
    struct dsd_err err;
    *code = 0;
    if (dsd_ipc_encode(&b, &a, DSD_IPC_FRAME_CEIL, &err) || dsd_ipc_send_fd(fd, b.data, b.len, memfd, &err) < 0) {
        dsd_ipc_buf_free(&b);
        return -1;
    }
    dsd_ipc_buf_free(&b);
    struct dsd_ipc_msg r;
    if (raw_recv(fd, &r, 10000))
        return -1;
    int t = (int)r.type;
    if (t == DSD_IPC_ERROR) {
        *code = r.error.code;
        printf("  shm refused: %s\n", r.error.msg.ptr);
    }
    dsd_ipc_msg_free(&r);
    return t;
}
