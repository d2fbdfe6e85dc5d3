#include "replica_ctl.h"

#include "../lib/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int port = -1;
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int mg_rcluster_init(mg_rcluster *c, const char *bin, unsigned n, unsigned election_ms)
{
    memset(c, 0, sizeof *c);
    if (n == 0 || n > MG_RCLUSTER_MAX)
        return -1;
    snprintf(c->bin, sizeof c->bin, "%s", bin);
    snprintf(c->root, sizeof c->root, "/tmp/mg-replicas-XXXXXX");
    if (mkdtemp(c->root) == NULL)
        return -1;
    c->n = n;
    c->election_ms = election_ms;
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        int port = free_port();
        if (port < 0)
            return -1;
        off += (size_t)snprintf(c->peers + off, sizeof c->peers - off, "%s%u=127.0.0.1:%d",
                                i ? "," : "", i + 1, port);
    }
    for (unsigned i = 0; i < MG_RCLUSTER_MAX; i++)
        c->procs[i].to_fd = c->procs[i].from_fd = -1;
    return 0;
}

int mg_rcluster_start(mg_rcluster *c, unsigned i)
{
    mg_rproc *p = &c->procs[i];
    int in[2], outp[2];
    char id[16], data[300], election[16];
    if (p->pid != 0 || pipe(in) != 0)
        return -1;
    if (pipe(outp) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    snprintf(id, sizeof id, "%u", i + 1);
    snprintf(data, sizeof data, "%s/r%u", c->root, i + 1);
    snprintf(election, sizeof election, "%u", c->election_ms ? c->election_ms : 400);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(outp[1], 1);
        close(in[0]);
        close(in[1]);
        close(outp[0]);
        close(outp[1]);
        execl(c->bin, c->bin, "--id", id, "--data", data, "--peers", c->peers, "--election-ms",
              election, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    p->pid = pid;
    p->to_fd = in[1];
    p->from_fd = outp[0];
    p->len = 0;
    char line[256];
    if (mg_rproc_readline(p, line, sizeof line, 10000) != 0 || strncmp(line, "ready", 5) != 0) {
        mg_rcluster_kill(c, i, SIGKILL);
        return -1;
    }
    return 0;
}

int mg_rproc_send(mg_rproc *p, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf - 1 || p->to_fd < 0)
        return -1;
    buf[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(p->to_fd, buf + off, (size_t)(n - off));
        if (w <= 0)
            return -1;
        off += (int)w;
    }
    return 0;
}

int mg_rproc_readline(mg_rproc *p, char *line, size_t cap, int timeout_ms)
{
    uint64_t deadline = mg_clock_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            size_t copy = n < cap - 1 ? n : cap - 1;
            memcpy(line, p->buf, copy);
            line[copy] = '\0';
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            return 0;
        }
        if (p->from_fd < 0 || p->len == sizeof p->buf)
            return -1;
        uint64_t now = mg_clock_mono_ns();
        if (now >= deadline)
            return -1;
        struct pollfd pfd = {.fd = p->from_fd, .events = POLLIN};
        int wait_ms = (int)((deadline - now) / 1000000ull) + 1;
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t r = read(p->from_fd, p->buf + p->len, sizeof p->buf - p->len);
        if (r <= 0)
            return -1;
        p->len += (size_t)r;
    }
}

int mg_rproc_call(mg_rproc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf || mg_rproc_send(p, "%s", buf) != 0)
        return -1;
    return mg_rproc_readline(p, reply, cap, timeout_ms);
}

void mg_rcluster_kill(mg_rcluster *c, unsigned i, int sig)
{
    mg_rproc *p = &c->procs[i];
    if (p->pid == 0)
        return;
    kill(p->pid, sig);
    if (sig != SIGKILL) {
        /* give it a moment to exit cleanly, then make sure */
        for (int t = 0; t < 200; t++) {
            if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
                goto reaped;
            usleep(10000);
        }
        kill(p->pid, SIGKILL);
    }
    waitpid(p->pid, NULL, 0);
reaped:
    if (p->to_fd >= 0)
        close(p->to_fd);
    if (p->from_fd >= 0)
        close(p->from_fd);
    p->to_fd = p->from_fd = -1;
    p->pid = 0;
    p->len = 0;
}

int mg_rcluster_leader(mg_rcluster *c, int timeout_ms)
{
    uint64_t deadline = mg_clock_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (mg_clock_mono_ns() < deadline) {
        for (unsigned i = 0; i < c->n; i++) {
            char reply[256], state = 0;
            if (c->procs[i].pid == 0)
                continue;
            if (mg_rproc_call(&c->procs[i], reply, sizeof reply, 2000, "status") != 0)
                continue;
            if (sscanf(reply, "status %c", &state) == 1 && state == 'L')
                return (int)i;
        }
        usleep(2000);
    }
    return -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void mg_rcluster_destroy(mg_rcluster *c)
{
    for (unsigned i = 0; i < c->n; i++)
        mg_rcluster_kill(c, i, SIGKILL);
    if (c->root[0] != '\0')
        nftw(c->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    c->root[0] = '\0';
}
