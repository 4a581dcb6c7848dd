#include "err.h"
#include "test.h"

#include <errno.h>

TEST(errf_formats_and_returns_code)
{
    struct dsd_err e = {{0}};
    ASSERT_EQ_INT(dsd_errf(&e, -EINVAL, "field \"%s\" is missing", "hidden_size"), -EINVAL);
    ASSERT_EQ_STR(e.msg, "field \"hidden_size\" is missing");
    ASSERT_EQ_INT(dsd_err_prefix(&e, -EINVAL, "%s", "config.json"), -EINVAL);
    ASSERT_EQ_STR(e.msg, "config.json: field \"hidden_size\" is missing");
    ASSERT_EQ_INT(dsd_errf(NULL, -ENOENT, "dropped"), -ENOENT);
}

TEST(errf_truncates_long_messages)
{
    struct dsd_err e;
    char big[2 * DSD_ERR_MSG_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    dsd_errf(&e, -1, "%s", big);
    ASSERT_EQ_INT(strlen(e.msg), DSD_ERR_MSG_MAX - 1);
}

int main(void)
{
    RUN(errf_formats_and_returns_code);
    RUN(errf_truncates_long_messages);
    return test_report();
}
