/*
 * Reading tokenizer.json (+ tokenizer_config.json) into the tables of
 * tokenizer_internal.h. Every check names the field and the value that is wrong, because
 * the usual cause is a file from a different model family or a truncated download.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "json_type.h"
#include "tokenizer_internal.h"
#include "utf8.h"

/* ------------------------------------------------------------------------------------ */
/* Blob and string tables                                                               */

static int blob_add(struct dsd_tokenizer *t, const void *s, size_t n, uint32_t *off)
{
    if (t->blob_len + n + 1 > UINT32_MAX)
        return -ENOMEM;
    if (t->blob_cap - t->blob_len < n + 1) {
        size_t cap = t->blob_cap ? t->blob_cap : 1 << 16;
        while (cap - t->blob_len < n + 1)
            cap *= 2;
        char *p = realloc(t->blob, cap);
        if (!p)
            return -ENOMEM;
        t->blob = p;
        t->blob_cap = cap;
    }
    *off = (uint32_t)t->blob_len;
    if (n)
        memcpy(t->blob + t->blob_len, s, n);
    t->blob[t->blob_len + n] = 0; /* NUL after each string: handy in messages */
    t->blob_len += n + 1;
    return 0;
}

static int str_table_init(struct tok_str_table *st, size_t count)
{
    size_t size = 16;
    while (size < 2 * count)
        size *= 2;
    st->slots = malloc(size * sizeof *st->slots);
    if (!st->slots)
        return -ENOMEM;
    for (size_t i = 0; i < size; i++)
        st->slots[i].id = -1;
    st->mask = size - 1;
    return 0;
}

/* Inserts unless the key is there; returns the id already stored, or -1 after inserting. */
static int32_t str_table_put(struct dsd_tokenizer *t, struct tok_str_table *st, uint32_t off,
                             uint32_t len, int32_t id)
{
    const char *s = t->blob + off;
    uint64_t h = XXH3_64bits(s, len);
    for (size_t i = h & st->mask;; i = (i + 1) & st->mask) {
        struct tok_str_slot *sl = &st->slots[i];
        if (sl->id < 0) {
            *sl = (struct tok_str_slot){.hash = h, .off = off, .len = len, .id = id};
            return -1;
        }
        if (sl->hash == h && sl->len == len && memcmp(t->blob + sl->off, s, len) == 0)
            return sl->id;
    }
}

int32_t tok_str_find(const struct dsd_tokenizer *t, const struct tok_str_table *st,
                     const char *s, size_t len)
{
    if (!st->slots)
        return -1;
    uint64_t h = XXH3_64bits(s, len);
    for (size_t i = h & st->mask;; i = (i + 1) & st->mask) {
        const struct tok_str_slot *sl = &st->slots[i];
        if (sl->id < 0)
            return -1;
        if (sl->hash == h && sl->len == len && memcmp(t->blob + sl->off, s, len) == 0)
            return sl->id;
    }
}

/* ------------------------------------------------------------------------------------ */
/* The byte-level alphabet                                                              */

/* Byte-level BPE writes each byte as one printable character: bytes that already are
 * printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68
 * take U+0100 upwards in byte order. This is GPT-2's convention, which every byte-level
 * vocabulary (DeepSeek's included) is written in. */
static void byte_level_alphabet(uint32_t cp_of_byte[256])
{
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of_byte[b] = printable ? (uint32_t)b : next++;
    }
}

/* Code points of the alphabet run from U+0021 to U+0143. */
#define ALPHABET_END (256 + 68)

/* Decodes a vocabulary string: when every character belongs to the byte-level alphabet the
 * token stands for those bytes, otherwise for its own UTF-8 (Hugging Face's decoder does
 * the same). byte_of_cp maps an alphabet code point to its byte, -1 elsewhere. Writes into
 * out (room for len bytes); returns the byte count. */
static size_t byte_level_decode(const int16_t byte_of_cp[ALPHABET_END], const char *s, size_t len,
                                char *out, bool *byte_level)
{
    *byte_level = false;
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, w = 0;
    while (i < len) {
        size_t cl;
        if (dsd_utf8_scan(u + i, len - i, &cl) != DSD_UTF8_CHAR)
            goto raw;
        uint32_t cp = dsd_utf8_decode(u + i, cl);
        if (cp >= ALPHABET_END || byte_of_cp[cp] < 0)
            goto raw;
        out[w++] = (char)byte_of_cp[cp];
        i += cl;
    }
    *byte_level = true;
    return w;
raw:
    memcpy(out, s, len);
    return len;
}

/* ------------------------------------------------------------------------------------ */
/* Small JSON helpers                                                                   */

/* Reads an optional boolean field; absent or null -> dflt. */
static int get_bool(const json_t *obj, const char *key, bool dflt, bool *out, const char *where,
                    struct dsd_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return dsd_errf(err, -EINVAL, "%s.%s is %s, expected true or false", where, key,
                        dsd_json_type_name(v));
    *out = json_is_true(v);
    return 0;
}

/* The "type" of a component object, or NULL (with err set) when it has none. */
static const char *get_type(const json_t *obj, const char *where, struct dsd_err *err)
{
    if (!json_is_object(obj)) {
        dsd_errf(err, -EINVAL, "%s is %s, expected an object", where, dsd_json_type_name(obj));
        return NULL;
    }
    json_t *t = json_object_get(obj, "type");
    if (!json_is_string(t)) {
        dsd_errf(err, -EINVAL, "%s has no \"type\" string", where);
        return NULL;
    }
    return json_string_value(t);
}

/* ------------------------------------------------------------------------------------ */
/* Model: vocab and merges                                                              */

static int load_vocab(struct dsd_tokenizer *t, json_t *model, struct dsd_err *err)
{
    json_t *vocab = json_object_get(model, "vocab");
    if (!vocab)
        return dsd_errf(err, -EINVAL, "model.vocab is missing");
    if (!json_is_object(vocab))
        return dsd_errf(err, -EINVAL, "model.vocab is %s, expected an object of token: id",
                        dsd_json_type_name(vocab));
    size_t count = json_object_size(vocab);
    if (count == 0)
        return dsd_errf(err, -EINVAL, "model.vocab is empty");

    int32_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_ID)
            return dsd_errf(err, -EINVAL, "model.vocab[\"%.80s\"] is not an id in 0..%d", key,
                            TOK_MAX_ID - 1);
        if (json_integer_value(val) > max_id)
            max_id = (int32_t)json_integer_value(val);
    }
    t->n_ids = max_id + 1;
    t->pieces = calloc((size_t)t->n_ids, sizeof *t->pieces);
    if (!t->pieces || str_table_init(&t->by_string, count + 4096) < 0)
        return -ENOMEM;

    uint32_t cp_of_byte[256];
    int16_t byte_of_cp[ALPHABET_END];
    byte_level_alphabet(cp_of_byte);
    for (int cp = 0; cp < ALPHABET_END; cp++)
        byte_of_cp[cp] = -1;
    for (int b = 0; b < 256; b++)
        byte_of_cp[cp_of_byte[b]] = (int16_t)b;

    char *tmp = NULL;
    size_t tmp_cap = 0;
    json_object_foreach(vocab, key, val) {
        size_t klen = strlen(key); /* jansson keys are NUL-terminated; vocab keys have no NUL */
        int32_t id = (int32_t)json_integer_value(val);
        uint32_t off;
        if (blob_add(t, key, klen, &off) < 0)
            goto nomem;
        int32_t prev = str_table_put(t, &t->by_string, off, (uint32_t)klen, id);
        if (prev >= 0) /* cannot happen: JSON object keys are unique in jansson */
            continue;
        if (t->pieces[id].flags & TOK_PIECE_EXISTS) {
            free(tmp);
            return dsd_errf(err, -EINVAL, "model.vocab gives id %d to both \"%.60s\" and \"%.60s\"",
                            id, t->blob + t->pieces[id].off, key);
        }
        if (tmp_cap < klen + 1) {
            char *p = realloc(tmp, klen + 64);
            if (!p)
                goto nomem;
            tmp = p;
            tmp_cap = klen + 64;
        }
        bool byte_level;
        size_t w = byte_level_decode(byte_of_cp, key, klen, tmp, &byte_level);
        uint32_t poff;
        if (blob_add(t, tmp, w, &poff) < 0)
            goto nomem;
        t->pieces[id] = (struct tok_piece){
            .off = poff,
            .len = (uint32_t)w,
            .flags = TOK_PIECE_EXISTS | (byte_level ? TOK_PIECE_BYTE_LEVEL : 0)};
    }
    free(tmp);

    for (int b = 0; b < 256; b++) {
        uint8_t enc[4];
        size_t el = dsd_utf8_encode(cp_of_byte[b], enc);
        int32_t id = tok_str_find(t, &t->by_string, (const char *)enc, el);
        if (id < 0)
            return dsd_errf(err, -EINVAL,
                            "model.vocab has no token for byte 0x%02X (\"%.*s\"): only byte-level "
                            "BPE vocabularies are supported",
                            b, (int)el, (const char *)enc);
        t->byte_id[b] = id;
    }
    return 0;
nomem:
    free(tmp);
    return dsd_errf(err, -ENOMEM, "out of memory reading model.vocab");
}

static int merge_put(struct dsd_tokenizer *t, int32_t l, int32_t r, uint32_t rank, int32_t id)
{
    uint64_t key = tok_pair_key(l, r);
    for (size_t i = tok_pair_slot(key, t->merges_mask);; i = (i + 1) & t->merges_mask) {
        struct tok_merge_slot *s = &t->merges[i];
        if (s->key == TOK_MERGE_EMPTY || s->key == key) {
            /* A repeated pair keeps its last rank, as Hugging Face's map does. */
            *s = (struct tok_merge_slot){.key = key, .rank = rank, .id = id};
            return 0;
        }
    }
}

static int load_merges(struct dsd_tokenizer *t, json_t *model, struct dsd_err *err)
{
    json_t *merges = json_object_get(model, "merges");
    if (!merges)
        return dsd_errf(err, -EINVAL, "model.merges is missing");
    if (!json_is_array(merges))
        return dsd_errf(err, -EINVAL, "model.merges is %s, expected an array",
                        dsd_json_type_name(merges));
    size_t n = json_array_size(merges);
    if (n >= UINT32_MAX / 4)
        return dsd_errf(err, -EINVAL, "model.merges has %zu entries, too many", n);
    size_t size = 16;
    while (size < 2 * n)
        size *= 2;
    t->merges = malloc(size * sizeof *t->merges);
    if (!t->merges)
        return dsd_errf(err, -ENOMEM, "out of memory for %zu merges", n);
    for (size_t i = 0; i < size; i++)
        t->merges[i].key = TOK_MERGE_EMPTY;
    t->merges_mask = size - 1;
    t->n_merges = (uint32_t)n;

    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(m)) {
            a = json_string_value(m);
            size_t len = json_string_length(m);
            const char *sp = memchr(a, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - a))) {
                rc = dsd_errf(err, -EINVAL,
                              "model.merges[%zu] \"%.80s\" is not two tokens separated by one space",
                              i, a);
                goto out;
            }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = len - al - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        } else {
            rc = dsd_errf(err, -EINVAL,
                          "model.merges[%zu] is %s, expected \"a b\" or [\"a\", \"b\"]", i,
                          dsd_json_type_name(m));
            goto out;
        }
        int32_t ia = tok_str_find(t, &t->by_string, a, al);
        int32_t ib = tok_str_find(t, &t->by_string, b, bl);
        if (ia < 0 || ib < 0) {
            rc = dsd_errf(err, -EINVAL, "model.merges[%zu] names \"%.*s\", which is not in model.vocab",
                          i, ia < 0 ? (int)al : (int)bl, ia < 0 ? a : b);
            goto out;
        }
        if (cat_cap < al + bl) {
            char *p = realloc(cat, al + bl + 64);
            if (!p) {
                rc = dsd_errf(err, -ENOMEM, "out of memory reading model.merges");
                goto out;
            }
            cat = p;
            cat_cap = al + bl + 64;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t id = tok_str_find(t, &t->by_string, cat, al + bl);
        if (id < 0) {
            rc = dsd_errf(err, -EINVAL,
                          "model.merges[%zu] makes \"%.*s\", which is not in model.vocab", i,
                          (int)(al + bl > 120 ? 120 : al + bl), cat);
            goto out;
        }
        merge_put(t, ia, ib, (uint32_t)i, id);
    }
out:
    free(cat);
    return rc;
}

static int load_model(struct dsd_tokenizer *t, json_t *root, struct dsd_err *err)
{
    json_t *model = json_object_get(root, "model");
    if (!model)
        return dsd_errf(err, -EINVAL, "\"model\" is missing");
    if (!json_is_object(model))
        return dsd_errf(err, -EINVAL, "\"model\" is %s, expected an object", dsd_json_type_name(model));
    json_t *type = json_object_get(model, "type");
    if (type && !json_is_string(type))
        return dsd_errf(err, -EINVAL, "model.type is %s, expected a string", dsd_json_type_name(type));
    if (type && strcmp(json_string_value(type), "BPE") != 0)
        return dsd_errf(err, -EINVAL,
                        "model.type is \"%.40s\": only byte-level BPE tokenizers are supported",
                        json_string_value(type));

    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0))
        return dsd_errf(err, -EINVAL, "model.dropout is set: BPE dropout (random merges) is not "
                                      "supported for inference");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return dsd_errf(err, -EINVAL, "model.%s is set: not supported with byte-level BPE",
                            affixes[i]);
    }
    int rc = get_bool(model, "ignore_merges", false, &t->ignore_merges, "model", err);
    if (rc < 0)
        return rc;
    /* unk_token, fuse_unk and byte_fallback never act: every byte has its own token. */
    if ((rc = load_vocab(t, model, err)) < 0)
        return rc;
    return load_merges(t, model, err);
}

/* ------------------------------------------------------------------------------------ */
/* Added tokens                                                                         */

static int trie_node(struct tok_trie *tr, uint8_t byte, uint32_t *out)
{
    if (tr->n == tr->cap) {
        uint32_t cap = tr->cap ? tr->cap * 2 : 256;
        struct tok_trie_node *p = realloc(tr->nodes, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        tr->nodes = p;
        tr->cap = cap;
    }
    tr->nodes[tr->n] = (struct tok_trie_node){.byte = byte, .added = -1};
    *out = tr->n++;
    return 0;
}

static int trie_insert(struct tok_trie *tr, const uint8_t *s, size_t len, int32_t added)
{
    uint32_t node;
    if (tr->n == 0 && trie_node(tr, 0, &node) < 0)
        return -ENOMEM;
    node = 0;
    if (tr->n == 1)
        tr->only_first = s[0]; /* the first content */
    else if (tr->only_first != s[0])
        tr->only_first = -1;
    tr->first[s[0] >> 6] |= 1ull << (s[0] & 63);
    for (size_t i = 0; i < len; i++) {
        uint32_t c = tr->nodes[node].child;
        while (c && tr->nodes[c].byte != s[i])
            c = tr->nodes[c].sibling;
        if (!c) {
            if (trie_node(tr, s[i], &c) < 0)
                return -ENOMEM;
            tr->nodes[c].sibling = tr->nodes[node].child;
            tr->nodes[node].child = c;
        }
        node = c;
    }
    tr->nodes[node].added = added;
    return 0;
}

static int load_added(struct dsd_tokenizer *t, json_t *root, struct dsd_err *err)
{
    json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return dsd_errf(err, -EINVAL, "added_tokens is %s, expected an array", dsd_json_type_name(arr));
    size_t n = json_array_size(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        return -ENOMEM;

    /* First pass: ids, so the per-id table can grow once. */
    int32_t max_id = t->n_ids - 1;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        json_t *id = json_object_get(o, "id"), *content = json_object_get(o, "content");
        if (!json_is_object(o) || !json_is_integer(id) || !json_is_string(content))
            return dsd_errf(err, -EINVAL,
                            "added_tokens[%zu] needs an integer \"id\" and a string \"content\"", i);
        if (json_integer_value(id) < 0 || json_integer_value(id) >= TOK_MAX_ID)
            return dsd_errf(err, -EINVAL, "added_tokens[%zu].id %lld is not in 0..%d", i,
                            (long long)json_integer_value(id), TOK_MAX_ID - 1);
        if ((int32_t)json_integer_value(id) > max_id)
            max_id = (int32_t)json_integer_value(id);
    }
    if (max_id + 1 > t->n_ids) {
        struct tok_piece *p = realloc(t->pieces, (size_t)(max_id + 1) * sizeof *p);
        if (!p)
            return -ENOMEM;
        memset(p + t->n_ids, 0, (size_t)(max_id + 1 - t->n_ids) * sizeof *p);
        t->pieces = p;
        t->n_ids = max_id + 1;
    }

    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        int32_t id = (int32_t)json_integer_value(json_object_get(o, "id"));
        json_t *content = json_object_get(o, "content");
        const char *s = json_string_value(content);
        size_t len = json_string_length(content);
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        struct tok_added a = {.id = id};
        int rc;
        if ((rc = get_bool(o, "special", false, &a.special, where, err)) < 0 ||
            (rc = get_bool(o, "normalized", !a.special, &a.normalized, where, err)) < 0 ||
            (rc = get_bool(o, "lstrip", false, &a.lstrip, where, err)) < 0 ||
            (rc = get_bool(o, "rstrip", false, &a.rstrip, where, err)) < 0 ||
            (rc = get_bool(o, "single_word", false, &a.single_word, where, err)) < 0)
            return rc;
        if (len == 0)
            continue; /* Hugging Face ignores empty contents; they could never match */
        if (len > UINT32_MAX / 2)
            return dsd_errf(err, -EINVAL, "%s.content is too long", where);

        int32_t known = tok_str_find(t, &t->by_string, s, len);
        if (known >= 0 && (t->pieces[known].flags & TOK_PIECE_ADDED))
            return dsd_errf(err, -EINVAL, "%s \"%.60s\" appears twice in added_tokens", where, s);
        /* Content that is already a vocabulary token keeps the vocabulary's id, whatever
         * "id" says: Hugging Face assigns it so (and only warns). */
        if (known >= 0)
            id = known;
        a.id = id;
        struct tok_piece *p = &t->pieces[id];
        if (p->flags & TOK_PIECE_ADDED)
            return dsd_errf(err, -EINVAL, "%s \"%.60s\": id %d is already taken by \"%.60s\"",
                            where, s, id, t->blob + p->off);
        if ((p->flags & TOK_PIECE_EXISTS) && known != id)
            return dsd_errf(err, -EINVAL,
                            "%s \"%.60s\": id %d is already the vocabulary token \"%.60s\"", where,
                            s, id, t->blob + p->off);
        if ((rc = blob_add(t, s, len, &a.off)) < 0)
            return dsd_errf(err, rc, "out of memory reading added_tokens");
        a.len = (uint32_t)len;
        if (known < 0)
            str_table_put(t, &t->by_string, a.off, a.len, id);
        /* An added token stands for its content, as typed (see tokenizer.h). */
        *p = (struct tok_piece){
            .off = a.off,
            .len = a.len,
            .flags = TOK_PIECE_EXISTS | TOK_PIECE_ADDED | (a.special ? TOK_PIECE_SPECIAL : 0),
        };
        if (a.lstrip || a.rstrip || a.single_word)
            t->any_lstrip_rstrip_single = true;
        int idx = t->n_added++;
        t->added[idx] = a;
        struct tok_trie *tr = a.normalized ? &t->trie_normalized : &t->trie_raw;
        if (trie_insert(tr, (const uint8_t *)s, len, idx) < 0)
            return dsd_errf(err, -ENOMEM, "out of memory reading added_tokens");
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Normalizer, pre-tokenizer, decoder                                                   */

static int check_normalizer(json_t *root, struct dsd_err *err)
{
    json_t *nz = json_object_get(root, "normalizer");
    if (!nz || json_is_null(nz))
        return 0;
    const char *type = get_type(nz, "normalizer", err);
    if (!type)
        return -EINVAL;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(nz, "normalizers");
        if (json_is_array(list) && json_array_size(list) == 0)
            return 0;
        const char *inner = json_is_array(list) ? get_type(json_array_get(list, 0),
                                                           "normalizer.normalizers[0]", err)
                                                : NULL;
        if (!inner)
            return json_is_array(list) ? -EINVAL
                                       : dsd_errf(err, -EINVAL, "normalizer.normalizers is not an array");
        type = inner;
    }
    return dsd_errf(err, -EINVAL, "normalizer \"%.40s\" is not supported (only none)", type);
}

/* GPT-2's split, what ByteLevel with use_regex applies. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Compiles one Split pattern (translated unless literal, see tokenizer_regex.c). */
static int compile_split(const char *pattern, size_t len, bool literal, bool delta,
                         pcre2_code **re, bool *jit, const char *where, struct dsd_err *err)
{
    struct dsd_tok_text pcre = {0};
    if (!literal) {
        const char *why;
        int rc = tok_regex_translate(pattern, len, delta, &pcre, &why);
        if (rc < 0) {
            dsd_tok_text_free(&pcre);
            return dsd_errf(err, rc, "%s.pattern \"%.80s\": %s", where, pattern, why);
        }
        pattern = pcre.data;
        len = pcre.len;
    }
    /* Oniguruma's defaults (Hugging Face compiles with no options): ^ and $ match at
     * line boundaries, and only "\n" is a newline (for '.', ^ and $). */
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        dsd_tok_text_free(&pcre);
        return -ENOMEM;
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!*re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        dsd_errf(err, -EINVAL, "%s.pattern does not compile (as PCRE2 \"%.80s\", at offset %zu): %s",
                 where, pattern, (size_t)eo, (const char *)msg);
        dsd_tok_text_free(&pcre);
        return -EINVAL;
    }
    dsd_tok_text_free(&pcre);
    /* Without JIT (a PCRE2 built without it, or W^X policies) matching still works, slower. */
    *jit = pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

static int add_split(struct dsd_tokenizer *t, const char *pattern, size_t len, bool literal,
                     enum tok_split_behavior behavior, bool invert, const char *where,
                     struct dsd_err *err)
{
    if (len == 0)
        return dsd_errf(err, -EINVAL, "%s.pattern is empty", where);
    struct tok_split *p = realloc(t->splits, (size_t)(t->n_splits + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    t->splits = p;
    struct tok_split *sp = &t->splits[t->n_splits];
    *sp = (struct tok_split){.invert = invert, .behavior = behavior};
    int rc = compile_split(pattern, len, literal, false, &sp->re, &sp->jit, where, err);
    if (rc < 0)
        return rc;
    rc = compile_split(pattern, len, literal, true, &sp->re_new, &sp->jit_new, where, err);
    if (rc < 0) {
        pcre2_code_free(sp->re);
        return rc;
    }
    t->n_splits++;
    return 0;
}

static int load_split(struct dsd_tokenizer *t, json_t *pt, const char *where, struct dsd_err *err)
{
    json_t *pat = json_object_get(pt, "pattern");
    json_t *re = pat ? json_object_get(pat, "Regex") : NULL;
    json_t *str = pat ? json_object_get(pat, "String") : NULL;
    if (!json_is_object(pat) || (!json_is_string(re) && !json_is_string(str)))
        return dsd_errf(err, -EINVAL, "%s.pattern must be {\"Regex\": ...} or {\"String\": ...}",
                        where);
    json_t *beh = json_object_get(pt, "behavior");
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    int b = -1;
    for (int i = 0; i < 5 && json_is_string(beh); i++)
        if (strcmp(json_string_value(beh), names[i]) == 0)
            b = i;
    if (b < 0)
        return dsd_errf(err, -EINVAL,
                        "%s.behavior must be one of Isolated, Removed, MergedWithPrevious, "
                        "MergedWithNext, Contiguous",
                        where);
    bool invert = false;
    int rc = get_bool(pt, "invert", false, &invert, where, err);
    if (rc < 0)
        return rc;
    json_t *p = re ? re : str;
    return add_split(t, json_string_value(p), json_string_length(p), !re,
                     (enum tok_split_behavior)b, invert, where, err);
}

static int load_pre_tokenizer(struct dsd_tokenizer *t, json_t *root, struct dsd_err *err)
{
    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (!pt || json_is_null(pt))
        return dsd_errf(err, -EINVAL, "pre_tokenizer is missing: only byte-level BPE (a ByteLevel "
                                      "pre-tokenizer) is supported");
    const char *type = get_type(pt, "pre_tokenizer", err);
    if (!type)
        return -EINVAL;
    json_t *single[1] = {pt};
    json_t **steps = single;
    size_t n = 1;
    json_t *list = NULL;
    if (strcmp(type, "Sequence") == 0) {
        list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            return dsd_errf(err, -EINVAL, "pre_tokenizer.pretokenizers is not an array");
        n = json_array_size(list);
        steps = NULL;
    }
    bool byte_level = false;
    for (size_t i = 0; i < n; i++) {
        json_t *step = steps ? steps[i] : json_array_get(list, i);
        char where[64];
        if (steps)
            snprintf(where, sizeof where, "pre_tokenizer");
        else
            snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%zu]", i);
        const char *st = get_type(step, where, err);
        if (!st)
            return -EINVAL;
        if (byte_level)
            return dsd_errf(err, -EINVAL, "%s (\"%.40s\") comes after ByteLevel: ByteLevel must be "
                                          "the last pre-tokenizer", where, st);
        int rc;
        if (strcmp(st, "Split") == 0) {
            if ((rc = load_split(t, step, where, err)) < 0)
                return rc;
        } else if (strcmp(st, "ByteLevel") == 0) {
            bool prefix = false, use_regex = true;
            if ((rc = get_bool(step, "add_prefix_space", false, &prefix, where, err)) < 0 ||
                (rc = get_bool(step, "use_regex", true, &use_regex, where, err)) < 0)
                return rc;
            if (prefix)
                return dsd_errf(err, -EINVAL, "%s.add_prefix_space is true: not supported", where);
            if (use_regex && (rc = add_split(t, gpt2_pattern, sizeof gpt2_pattern - 1, false,
                                             TOK_SPLIT_ISOLATED, false, where, err)) < 0)
                return rc;
            byte_level = true;
        } else {
            return dsd_errf(err, -EINVAL, "%s type \"%.40s\" is not supported (only Split and "
                                          "ByteLevel)", where, st);
        }
    }
    if (!byte_level)
        return dsd_errf(err, -EINVAL, "pre_tokenizer has no ByteLevel step: only byte-level BPE "
                                      "is supported");
    return 0;
}

static int check_decoder(json_t *root, struct dsd_err *err)
{
    json_t *d = json_object_get(root, "decoder");
    if (!d || json_is_null(d))
        return 0;
    const char *type = get_type(d, "decoder", err);
    if (!type)
        return -EINVAL;
    if (strcmp(type, "ByteLevel") != 0)
        return dsd_errf(err, -EINVAL, "decoder \"%.40s\" is not supported (only ByteLevel)", type);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* tokenizer_config.json                                                                */

static int config_token(struct dsd_tokenizer *t, json_t *cfg, const char *key, int32_t *out,
                        struct dsd_err *err)
{
    json_t *v = json_object_get(cfg, key);
    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return dsd_errf(err, -EINVAL, "tokenizer_config.json: %s must be a string or an object "
                                      "with a \"content\" string", key);
    *out = tok_str_find(t, &t->by_string, json_string_value(v), json_string_length(v));
    if (*out < 0)
        return dsd_errf(err, -EINVAL, "tokenizer_config.json: %s \"%.60s\" is not a token of "
                                      "tokenizer.json", key, json_string_value(v));
    return 0;
}

static int load_config(struct dsd_tokenizer *t, const char *json, size_t len, struct dsd_err *err)
{
    json_error_t je;
    json_t *cfg = json_loadb(json, len, 0, &je);
    if (!cfg)
        return dsd_errf(err, -EINVAL, "tokenizer_config.json is not JSON: line %d column %d: %s",
                        je.line, je.column, je.text);
    int rc = -EINVAL;
    if (!json_is_object(cfg)) {
        dsd_errf(err, rc, "tokenizer_config.json is %s, expected an object", dsd_json_type_name(cfg));
        goto out;
    }
    if ((rc = config_token(t, cfg, "bos_token", &t->bos_id, err)) < 0 ||
        (rc = config_token(t, cfg, "eos_token", &t->eos_id, err)) < 0 ||
        (rc = get_bool(cfg, "add_bos_token", false, &t->add_bos, "tokenizer_config.json", err)) < 0)
        goto out;
    rc = 0;
out:
    json_decref(cfg);
    return rc;
}

/* ------------------------------------------------------------------------------------ */

void dsd_tokenizer_free(struct dsd_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_splits; i++) {
        pcre2_code_free(t->splits[i].re);
        pcre2_code_free(t->splits[i].re_new);
    }
    pcre2_code_free(t->word_char_re);
    free(t->splits);
    free(t->blob);
    free(t->pieces);
    free(t->merges);
    free(t->by_string.slots);
    free(t->by_bytes.slots);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_normalized.nodes);
    free(t);
}

/* The bytes -> id table of byte-level vocabulary tokens, and for each whether BPE on its
 * own bytes gives it back (then encoding a piece equal to it needs no merging). */
static int build_by_bytes(struct dsd_tokenizer *t)
{
    if (str_table_init(&t->by_bytes, (size_t)t->n_ids) < 0)
        return -ENOMEM;
    struct tok_bpe_scratch scratch = {0};
    struct dsd_tok_ids ids = {0};
    int rc = 0;
    for (int32_t id = 0; id < t->n_ids && rc == 0; id++) {
        struct tok_piece *p = &t->pieces[id];
        if ((p->flags & (TOK_PIECE_BYTE_LEVEL | TOK_PIECE_ADDED)) != TOK_PIECE_BYTE_LEVEL)
            continue;
        if (str_table_put(t, &t->by_bytes, p->off, p->len, id) >= 0)
            continue; /* two tokens for the same bytes: the first keeps the entry */
        if (p->len > t->max_piece_len)
            t->max_piece_len = p->len;
        ids.len = 0;
        rc = tok_bpe_merge(t, (const uint8_t *)t->blob + p->off, p->len, &scratch, &ids);
        if (rc == 0 && ids.len == 1 && ids.ids[0] == id)
            p->flags |= TOK_PIECE_BPE_SELF;
    }
    free(scratch.mem);
    dsd_tok_ids_free(&ids);
    return rc;
}

int dsd_tokenizer_load_json(struct dsd_tokenizer **out, const char *json, size_t len,
                            const char *config_json, size_t config_len, struct dsd_err *err)
{
    *out = NULL;
    tok_regex_init();
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return dsd_errf(err, -EINVAL, "not JSON: line %d column %d: %s", je.line, je.column,
                        je.text);
    int rc = -EINVAL;
    struct dsd_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return dsd_errf(err, -ENOMEM, "out of memory");
    }
    t->bos_id = t->eos_id = -1;
    static _Atomic uint64_t generations;
    t->generation = ++generations;
    if (!json_is_object(root)) {
        rc = dsd_errf(err, -EINVAL, "the top level is %s, expected an object", dsd_json_type_name(root));
        goto fail;
    }
    json_t *ver = json_object_get(root, "version");
    if (ver && !(json_is_string(ver) && strcmp(json_string_value(ver), "1.0") == 0)) {
        rc = dsd_errf(err, -EINVAL, "version is %s%.20s%s, expected \"1.0\"",
                      json_is_string(ver) ? "\"" : "", json_is_string(ver) ? json_string_value(ver) : dsd_json_type_name(ver),
                      json_is_string(ver) ? "\"" : "");
        goto fail;
    }
    if ((rc = load_model(t, root, err)) < 0 || (rc = load_added(t, root, err)) < 0 ||
        (rc = check_normalizer(root, err)) < 0 || (rc = load_pre_tokenizer(t, root, err)) < 0 ||
        (rc = check_decoder(root, err)) < 0)
        goto fail;
    if ((rc = build_by_bytes(t)) < 0)
        goto fail;
    if (t->any_lstrip_rstrip_single) {
        /* Hugging Face's \w (Rust regex): alphabetic, marks, decimal digits, connector
         * punctuation, joiners. */
        int ec;
        PCRE2_SIZE eo;
        static const char w[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
        t->word_char_re = pcre2_compile((PCRE2_SPTR)w, sizeof w - 1, PCRE2_UTF | PCRE2_UCP |
                                        PCRE2_ANCHORED, &ec, &eo, NULL);
        if (!t->word_char_re) {
            rc = dsd_errf(err, -EINVAL, "this PCRE2 lacks Unicode properties (need 10.40+)");
            goto fail;
        }
    }
    if (config_json && (rc = load_config(t, config_json, config_len, err)) < 0)
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    if (rc == -ENOMEM && !err->msg[0])
        dsd_errf(err, rc, "out of memory");
    json_decref(root);
    dsd_tokenizer_free(t);
    return rc;
}

/* Reads a whole file; returns 0, or -errno with err set. *len excludes the NUL added. */
static int read_file(const char *path, char **data, size_t *len, struct dsd_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dsd_errf(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return dsd_errf(err, -e, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return dsd_errf(err, -EINVAL, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return dsd_errf(err, -ENOMEM, "%s: out of memory for %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return dsd_errf(err, -e, "%s: %s", path, r < 0 ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = 0;
    *data = buf;
    *len = size;
    return 0;
}

int dsd_tokenizer_load(struct dsd_tokenizer **out, const char *path, struct dsd_err *err)
{
    *out = NULL;
    struct dsd_err local = {{0}};
    if (!err)
        err = &local;
    struct stat st;
    char *file = NULL, *dir = NULL;
    int rc;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (asprintf(&file, "%s/tokenizer.json", path) < 0)
            return dsd_errf(err, -ENOMEM, "out of memory");
        dir = strdup(path);
    } else {
        file = strdup(path);
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    }
    char *cfg_path = NULL, *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    if (!file || !dir || asprintf(&cfg_path, "%s/tokenizer_config.json", dir) < 0) {
        cfg_path = NULL;
        rc = dsd_errf(err, -ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = read_file(file, &json, &json_len, err)) < 0)
        goto out;
    if (access(cfg_path, F_OK) == 0 && (rc = read_file(cfg_path, &cfg, &cfg_len, err)) < 0)
        goto out;
    rc = dsd_tokenizer_load_json(out, json, json_len, cfg, cfg_len, err);
    if (rc < 0)
        dsd_err_prefix(err, rc, "%s", strstr(err->msg, "tokenizer_config.json") ? dir : file);
out:
    free(file);
    free(dir);
    free(cfg_path);
    free(json);
    free(cfg);
    return rc;
}
