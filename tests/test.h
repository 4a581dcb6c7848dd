/*
 * tests/test.h: the project's whole unit-test harness (no framework needed).
 *
 *   #include "test.h"
 *   TEST(fp8_roundtrip) { ASSERT_EQ_INT(1 + 1, 2); }
 *   int main(void) { RUN(fp8_roundtrip); return test_report(); }
 *
 * Every ASSERT_* prints file:line and the values on failure and marks the current test
 * failed; the test keeps running so one run shows all failures. test_report() returns
 * the process exit status: 0 when everything passed, 1 otherwise. Exit 77 = skipped
 * (ctest SKIP_RETURN_CODE) is available through TEST_SKIP().
 */
#ifndef DSD_TEST_H
#define DSD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_total;
static int test_checks_total;
static int test_current_failed;
static const char *test_current_name = "";

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                             \
    do {                                                                      \
        test_current_failed = 0;                                              \
        test_current_name = #name;                                            \
        test_##name();                                                        \
        printf("%s %s\n", test_current_failed ? "FAIL" : "ok  ", #name);      \
        fflush(stdout);                                                       \
    } while (0)

#define TEST_FAIL_AT(...)                                                     \
    do {                                                                      \
        fprintf(stderr, "%s:%d: [%s] ", __FILE__, __LINE__, test_current_name); \
        fprintf(stderr, __VA_ARGS__);                                         \
        fputc('\n', stderr);                                                  \
        test_current_failed = 1;                                              \
        test_failures_total++;                                                \
    } while (0)

#define ASSERT_TRUE(cond)                                                     \
    do {                                                                      \
        test_checks_total++;                                                  \
        if (!(cond)) TEST_FAIL_AT("expected true: %s", #cond);                \
    } while (0)

#define ASSERT_EQ_INT(a, b)                                                   \
    do {                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                   \
        test_checks_total++;                                                  \
        if (a_ != b_) TEST_FAIL_AT("%s == %s: %lld != %lld", #a, #b, a_, b_); \
    } while (0)

#define ASSERT_EQ_STR(a, b)                                                   \
    do {                                                                      \
        const char *a_ = (a), *b_ = (b);                                      \
        test_checks_total++;                                                  \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                \
            TEST_FAIL_AT("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", \
                         b_ ? b_ : "(null)");                                 \
    } while (0)

/* |a-b| <= atol + rtol*|b|; NaN never passes. */
#define ASSERT_NEAR(a, b, atol, rtol)                                         \
    do {                                                                      \
        double a_ = (double)(a), b_ = (double)(b);                            \
        test_checks_total++;                                                  \
        if (!(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_)))                     \
            TEST_FAIL_AT("%s ~= %s: %.9g vs %.9g (atol %g rtol %g)", #a, #b, a_, b_, \
                         (double)(atol), (double)(rtol));                     \
    } while (0)

#define TEST_SKIP(why)                                                        \
    do {                                                                      \
        printf("skipped: %s\n", why);                                         \
        exit(77);                                                             \
    } while (0)

static inline int test_report(void)
{
    printf("%d checks, %d failures\n", test_checks_total, test_failures_total);
    return test_failures_total ? 1 : 0;
}

#endif
