/* OpenAI-shaped errors and the HTTP status of each libdeepseekd return code (openai.h). */
#include <errno.h>

#include "openai.h"

static const char *type_for_status(int status)
{
    switch (status) {
    case 400:
    case 404:
    case 405:
    case 413:
        return "invalid_request_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable";
    default:
        return "server_error";
    }
}

json_t *oa_error_json(int http_status, const char *message, const char *param, const char *code)
{
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message ? message : "",
                     "type", type_for_status(http_status), "param", param, "code", code);
}

int oa_status_for_errno(int rc)
{
    switch (rc) {
    case -EINVAL:
    case -E2BIG:
    case -EOPNOTSUPP:
        return 400;
    case -EMSGSIZE:
        return 413;
    case -EBUSY:
        return 429;
    case -EAGAIN:           /* the daemon is loading its model */
    case -ESHUTDOWN:        /* draining */
    case -ENOENT:           /* no daemon listening */
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -ECONNABORTED:
    case -EACCES:
    case -ETIMEDOUT:
        return 503;
    default:
        return 500;
    }
}

const char *oa_code_for_errno(int rc)
{
    switch (rc) {
    case -E2BIG:
        return "context_length_exceeded";
    case -EMSGSIZE:
        return "request_too_large";
    case -EBUSY:
        return "rate_limit_exceeded";
    case -EAGAIN:
        return "model_loading";
    case -EOPNOTSUPP:
        return "unsupported";
    default:
        return NULL;
    }
}
