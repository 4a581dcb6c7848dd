/*
 * The log: "<N>" priority prefixes (the numbers journald parses), one line per call whatever
 * the message holds, the level filter, dsd_log_err, and whole lines from many threads at once.
 * stderr is pointed at a file for each test and read back.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

static char path[256];
static int saved_stderr = -1;

static void capture_begin(void)
{
    snprintf(path, sizeof path, "%s/dsd-log-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(1);
    }
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    close(fd);
    /* O_APPEND, as journald's stream and a shell's 2>> would be. */
    fd = open(path, O_WRONLY | O_APPEND);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restores stderr and returns what was logged (malloc'd). */
static char *capture_end(size_t *len)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(path, "r");
    struct stat st;
    fstat(fileno(f), &st);
    char *text = malloc((size_t)st.st_size + 1);
    size_t n = fread(text, 1, (size_t)st.st_size, f);
    text[n] = 0;
    fclose(f);
    unlink(path);
    if (len)
        *len = n;
    return text;
}

TEST(prefix_and_one_line)
{
    dsd_log_set_level(LOG_DEBUG);
    capture_begin();
    dsd_log(LOG_ERR, "error %d", 1);
    dsd_log(LOG_WARNING, "warning %s", "two");
    dsd_log(LOG_NOTICE, "notice");
    dsd_log(LOG_INFO, "info %c", '4');
    dsd_log(LOG_DEBUG, "debug");
    dsd_log(LOG_CRIT, "crit");
    dsd_log(LOG_INFO, "%s", "");
    char *t = capture_end(NULL);
    ASSERT_EQ_STR(t, "<3>error 1\n<4>warning two\n<5>notice\n<6>info 4\n<7>debug\n<2>crit\n<6>\n");
    free(t);
}

TEST(level_filter)
{
    capture_begin();
    dsd_log_set_level(LOG_WARNING);
    ASSERT_EQ_INT(dsd_log_get_level(), LOG_WARNING);
    ASSERT_TRUE(dsd_log_enabled(LOG_ERR));
    ASSERT_TRUE(dsd_log_enabled(LOG_WARNING));
    ASSERT_TRUE(!dsd_log_enabled(LOG_NOTICE));
    dsd_log(LOG_INFO, "dropped");
    dsd_log(LOG_WARNING, "kept");
    dsd_log(LOG_ERR, "kept too");
    dsd_log_set_level(LOG_ERR);
    dsd_log(LOG_WARNING, "dropped");
    dsd_log(LOG_ALERT, "always");
    /* Out of range levels clamp: errors are always logged, debug is the most verbose. */
    dsd_log_set_level(LOG_EMERG);
    ASSERT_EQ_INT(dsd_log_get_level(), LOG_ERR);
    dsd_log(LOG_ERR, "err at clamped level");
    dsd_log_set_level(99);
    ASSERT_EQ_INT(dsd_log_get_level(), LOG_DEBUG);
    dsd_log(LOG_DEBUG, "debug");
    char *t = capture_end(NULL);
    ASSERT_EQ_STR(t, "<4>kept\n<3>kept too\n<1>always\n<3>err at clamped level\n<7>debug\n");
    free(t);
    dsd_log_set_level(LOG_INFO);
}

TEST(control_characters_stay_on_one_line)
{
    capture_begin();
    dsd_log(LOG_INFO, "client said \"%s\"", "a\nb\r\tc\x01\x7f" "d\n<3>forged");
    char *t = capture_end(NULL);
    ASSERT_EQ_STR(t, "<6>client said \"a\\nb\\r\\tc\\x01\\x7fd\\n<3>forged\"\n");
    free(t);
}

TEST(long_lines_are_cut)
{
    char *big = malloc(20000);
    memset(big, 'x', 19999);
    big[19999] = 0;
    capture_begin();
    dsd_log(LOG_INFO, "%s", big);
    /* Escapes expand: a line of control bytes is cut too. */
    memset(big, '\n', 19999);
    dsd_log(LOG_INFO, "%s", big);
    size_t len;
    char *t = capture_end(&len);
    char *nl = strchr(t, '\n');
    ASSERT_TRUE(nl != NULL);
    size_t first = (size_t)(nl - t) + 1;
    ASSERT_TRUE(first <= DSD_LOG_LINE_MAX);
    ASSERT_TRUE(first > DSD_LOG_LINE_MAX - 16);
    ASSERT_TRUE(strncmp(t, "<6>xxx", 6) == 0);
    ASSERT_TRUE(strncmp(nl - 3, "...", 3) == 0);
    char *second = nl + 1;
    char *nl2 = strchr(second, '\n');
    ASSERT_TRUE(nl2 != NULL && nl2[1] == 0);
    ASSERT_TRUE((size_t)(nl2 - second) + 1 <= DSD_LOG_LINE_MAX);
    ASSERT_TRUE(strncmp(second, "<6>\\n\\n", 7) == 0);
    ASSERT_TRUE(strncmp(nl2 - 3, "...", 3) == 0);
    free(t);
    free(big);
}

TEST(log_err_helper)
{
    struct dsd_err err;
    dsd_errf(&err, -EINVAL, "config.json: field \"%s\" is missing", "index_topk");
    struct dsd_err empty = { { 0 } };
    capture_begin();
    dsd_log_err(LOG_ERR, &err, "loading %s", "/srv/m");
    dsd_log_err(LOG_WARNING, &err, NULL);
    dsd_log_err(LOG_ERR, &empty, "context only");
    dsd_log_err(LOG_ERR, NULL, "no err");
    dsd_log_err(LOG_DEBUG, &err, "filtered");
    char *t = capture_end(NULL);
    ASSERT_EQ_STR(t, "<3>loading /srv/m: config.json: field \"index_topk\" is missing\n"
                     "<4>config.json: field \"index_topk\" is missing\n"
                     "<3>context only\n"
                     "<3>no err\n");
    free(t);
}

TEST(errno_is_preserved)
{
    capture_begin();
    errno = ENOSPC;
    dsd_log(LOG_INFO, "x");
    int e1 = errno;
    errno = EPIPE;
    dsd_log_err(LOG_INFO, NULL, "y");
    int e2 = errno;
    free(capture_end(NULL));
    ASSERT_EQ_INT(e1, ENOSPC);
    ASSERT_EQ_INT(e2, EPIPE);
}

#define N_THREADS 8
#define N_LINES 2000

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    char pad[200];
    memset(pad, 'a' + id, sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    for (int i = 0; i < N_LINES; i++)
        dsd_log(LOG_NOTICE, "T%d L%d %s", id, i, pad);
    return NULL;
}

/* Lines from several threads at once arrive whole and in each thread's order. */
TEST(threads_never_interleave)
{
    capture_begin();
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i);
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = capture_end(NULL);
    int next[N_THREADS] = { 0 };
    int lines = 0, bad = 0;
    for (char *l = t; *l;) {
        char *nl = strchr(l, '\n');
        if (!nl) {
            bad++;
            break;
        }
        *nl = 0;
        int id, n, off = 0;
        if (sscanf(l, "<5>T%d L%d %n", &id, &n, &off) != 2 || id < 0 || id >= N_THREADS ||
            n != next[id] || strlen(l + off) != 199 || (size_t)strspn(l + off, (char[]){ (char)('a' + id), 0 }) != 199)
            bad++;
        else
            next[id]++;
        lines++;
        l = nl + 1;
    }
    ASSERT_EQ_INT(bad, 0);
    ASSERT_EQ_INT(lines, N_THREADS * N_LINES);
    for (int i = 0; i < N_THREADS; i++)
        ASSERT_EQ_INT(next[i], N_LINES);
    free(t);
}

int main(void)
{
    RUN(prefix_and_one_line);
    RUN(level_filter);
    RUN(control_characters_stay_on_one_line);
    RUN(long_lines_are_cut);
    RUN(log_err_helper);
    RUN(errno_is_preserved);
    RUN(threads_never_interleave);
    return test_report();
}
