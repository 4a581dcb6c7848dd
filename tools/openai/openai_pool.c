/*
 * The gateway's connections to deepseekd (openai.h). A few libdeepseekd clients, shared by
 * every worker thread (libdeepseekd is thread-safe: each worker runs its own request on a
 * shared client). A request takes the least used slot, connecting it when empty; a client
 * whose connection died (daemon restarted) is freed once its last user gives it back, and
 * the slot connects anew on the next request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "log.h"
#include "openai.h"

int oa_pool_init(struct oa_pool *p, const char *socket, int n_slots)
{
    memset(p, 0, sizeof *p);
    snprintf(p->socket, sizeof p->socket, "%s", socket);
    p->slots = calloc((size_t)n_slots, sizeof *p->slots);
    if (!p->slots)
        return -ENOMEM;
    p->n_slots = n_slots;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->text_mu, NULL);
    return 0;
}

void oa_pool_free(struct oa_pool *p)
{
    for (int i = 0; i < p->n_slots; i++)
        dsd_client_free(p->slots[i].client);
    free(p->slots);
    if (p->token_text)
        for (uint32_t i = 0; i < p->vocab_size; i++)
            free(p->token_text[i]);
    free(p->token_text);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->text_mu);
}

static bool is_dead(int rc)
{
    return rc == -ECONNRESET || rc == -ECONNABORTED || rc == -EPROTO;
}

int oa_pool_acquire(struct oa_pool *p, struct dsd_client **client, struct dsd_err *err)
{
    pthread_mutex_lock(&p->mu);
    int best = -1;
    for (int i = 0; i < p->n_slots; i++) {
        struct oa_slot *s = &p->slots[i];
        if (s->dead)
            continue;
        if (best < 0 || s->users < p->slots[best].users)
            best = i;
    }
    if (best < 0) {
        pthread_mutex_unlock(&p->mu);
        return dsd_errf(err, -ECONNRESET, "every connection to deepseekd at %s is being closed; retry", p->socket);
    }
    struct oa_slot *s = &p->slots[best];
    if (!s->client) {
        /* Connecting under the lock: a local socket answers at once, or refuses at once. */
        struct dsd_client_params cp = dsd_client_default_params();
        cp.socket_path = p->socket[0] ? p->socket : NULL;
        cp.client_name = "deepseekd-openai";
        cp.timeout_ms = 10000;
        struct dsd_client_error ce = {0};
        int rc = dsd_client_connect(&cp, &s->client, &ce);
        if (rc < 0) {
            s->client = NULL;
            pthread_mutex_unlock(&p->mu);
            return dsd_errf(err, rc, "cannot reach deepseekd: %s", ce.message);
        }
        const struct dsd_client_info *f = dsd_client_get_facts(s->client);
        if (f) {
            snprintf(p->model, sizeof p->model, "%s", f->model_name ? f->model_name : "");
            pthread_mutex_lock(&p->text_mu);
            if (!p->token_text && f->vocab_size) {
                p->token_text = calloc(f->vocab_size, sizeof *p->token_text);
                p->vocab_size = p->token_text ? f->vocab_size : 0;
            }
            pthread_mutex_unlock(&p->text_mu);
        }
        s->users = 0;
    }
    s->users++;
    *client = s->client;
    pthread_mutex_unlock(&p->mu);
    return best;
}

void oa_pool_release(struct oa_pool *p, int slot, int rc)
{
    pthread_mutex_lock(&p->mu);
    struct oa_slot *s = &p->slots[slot];
    if (is_dead(rc) && !s->dead) {
        dsd_log(LOG_WARNING, "connection %d to deepseekd lost; reconnecting on the next request", slot);
        s->dead = true;
    }
    struct dsd_client *drop = NULL;
    if (--s->users == 0 && s->dead) {
        drop = s->client;
        s->client = NULL;
        s->dead = false;
    }
    pthread_mutex_unlock(&p->mu);
    dsd_client_free(drop);
}

int oa_pool_model(struct oa_pool *p, char *out, size_t size, struct dsd_err *err)
{
    struct dsd_client *c;
    int slot = oa_pool_acquire(p, &c, err);
    if (slot < 0)
        return slot;
    const struct dsd_client_info *f = dsd_client_get_facts(c);
    snprintf(out, size, "%s", f && f->model_name ? f->model_name : "");
    oa_pool_release(p, slot, 0);
    return 0;
}

const char *oa_pool_token_text(struct oa_pool *p, struct dsd_client *c, uint32_t id)
{
    pthread_mutex_lock(&p->text_mu);
    const char *t = id < p->vocab_size ? p->token_text[id] : "";
    pthread_mutex_unlock(&p->text_mu);
    if (t)
        return t;
    char *text = NULL;
    if (dsd_client_detokenize(c, &id, 1, false, &text, NULL, NULL) < 0)
        return "";
    char *copy = strdup(text);
    dsd_client_buffer_free(text);
    if (!copy)
        return "";
    pthread_mutex_lock(&p->text_mu);
    if (!p->token_text[id])
        p->token_text[id] = copy;
    else
        free(copy);
    t = p->token_text[id];
    pthread_mutex_unlock(&p->text_mu);
    return t;
}
