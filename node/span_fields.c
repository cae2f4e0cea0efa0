/* Span ids, integers, operation names and peers, shared by the OTLP,
 * Zipkin and Jaeger parsers so that all three agree exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/ingest.h"
#include "node/json.h"

/* Hex digit values, -1 for anything else: a table, because every span id
 * of every request goes through here. */
static const signed char hex_table[256] = {
#define R16 -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
    R16, R16, R16, 0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   -1, -1, -1,
    -1,  -1,  -1,  -1,  10,  11,  12,  13,  14,  15,  -1,  -1,  -1,  -1, -1, -1,
    -1,  -1,  -1,  R16, -1,  10,  11,  12,  13,  14,  15,  -1,  -1,  -1, -1, -1,
    -1,  -1,  -1,  -1,  R16, R16, R16, R16, R16, R16, R16, R16, R16,
#undef R16
};

static int hex_value(char c)
{
    return hex_table[(unsigned char)c];
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' || c == '-' ? 62 : (c == '/' || c == '_' ? 63 : -1);
}

/* Base64 of exactly @n bytes: 24 characters for 16 bytes, 12 for 8, with
 * or without padding. */
static int decode_b64(const char *t, size_t len, uint8_t *out, size_t n)
{
    while (len > 0 && t[len - 1] == '=') {
        len--;
    }
    if (len != (n * 4 + 2) / 3) {
        return SM_EMALFORMED;
    }
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(t[i]);
        if (v < 0) {
            return SM_EMALFORMED;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    return k == n ? SM_OK : SM_EMALFORMED;
}

int node_decode_id(const char *text, size_t len, uint8_t *out, size_t n)
{
    int all_hex = len > 0 && len <= 2 * n;
    for (size_t i = 0; all_hex && i < len; i++) {
        all_hex = hex_value(text[i]) >= 0;
    }
    if (all_hex) {
        memset(out, 0, n);
        /* Right-align: "2" is id 0x...02. */
        size_t at = 2 * n - len;
        for (size_t i = 0; i < len; i++, at++) {
            int v = hex_value(text[i]);
            out[at / 2] |= (uint8_t)(at % 2 ? v : v << 4);
        }
        return SM_OK;
    }
    uint8_t tmp[16];
    if (n > sizeof tmp || decode_b64(text, len, tmp, n) != SM_OK) {
        return SM_EMALFORMED;
    }
    memcpy(out, tmp, n);
    return SM_OK;
}

int node_parse_u64(const char *text, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20) {
        return SM_EMALFORMED;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return SM_EMALFORMED;
        }
        uint64_t d = (uint64_t)(text[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return SM_EMALFORMED;
        }
        v = v * 10 + d;
    }
    *out = v;
    return SM_OK;
}

int node_span_read_us(struct cbn_span *s,
                      const struct node_json *span,
                      const char *start_key,
                      char *why)
{
    const struct node_json *start = node_json_get(span, start_key);
    const struct node_json *dur = node_json_get(span, "duration");
    uint64_t start_us, dur_us = 0;
    if (start == NULL || start->type == NODE_JSON_NULL) {
        sm_errmsg_printf(why, "%s is missing", start_key);
        return SM_EMALFORMED;
    }
    if (node_json_u64(start, &start_us) != SM_OK) {
        sm_errmsg_printf(why, "%s is not a non-negative integer", start_key);
        return SM_EMALFORMED;
    }
    if (dur != NULL && dur->type != NODE_JSON_NULL &&
        node_json_u64(dur, &dur_us) != SM_OK) {
        sm_errmsg_printf(why, "duration is not a non-negative integer");
        return SM_EMALFORMED;
    }
    if (start_us > UINT64_MAX / 1000 || dur_us > UINT64_MAX / 1000 ||
        start_us * 1000 > UINT64_MAX - dur_us * 1000) {
        sm_errmsg_printf(why, "%s or duration out of range", start_key);
        return SM_EMALFORMED;
    }
    s->start_ns = start_us * 1000;
    s->end_ns = s->start_ns + dur_us * 1000;
    return SM_OK;
}

void node_span_attr(struct node_span_attrs *a,
                    const char *key,
                    const char *value)
{
    /* Stable and old HTTP semantic conventions both count. */
    if (strcmp(key, "http.route") == 0) {
        a->http_route = value;
    } else if (strcmp(key, "url.path") == 0) {
        a->url_path = value;
    } else if (strcmp(key, "http.target") == 0) {
        if (a->url_path == NULL) {
            a->url_path = value;
        }
    } else if (strcmp(key, "rpc.service") == 0) {
        a->rpc_service = value;
    } else if (strcmp(key, "rpc.method") == 0) {
        a->rpc_method = value;
    } else if (strcmp(key, "peer.service") == 0) {
        a->peer_service = value;
    } else if (strcmp(key, "server.address") == 0 ||
               (strcmp(key, "net.peer.name") == 0 &&
                a->server_address == NULL)) {
        a->server_address = value;
    } else if (strcmp(key, "server.port") == 0 ||
               (strcmp(key, "net.peer.port") == 0 && a->server_port == NULL)) {
        a->server_port = value;
    } else if (strcmp(key, "url.full") == 0 ||
               (strcmp(key, "http.url") == 0 && a->url_full == NULL)) {
        a->url_full = value;
    } else if (strcmp(key, "service.instance.id") == 0) {
        a->instance = value;
    } else if (strcmp(key, "http.response.status_code") == 0 ||
               strcmp(key, "http.status_code") == 0) {
        a->status_5xx = atoi(value) >= 500;
    } else if ((strcmp(key, "error") == 0 && strcmp(value, "true") == 0) ||
               (strcmp(key, "otel.status_code") == 0 &&
                strcmp(value, "ERROR") == 0)) {
        a->error = 1;
    }
}

/* The path part of an http.target ("/a?b=c" -> "/a"): its length. */
static size_t path_len(const char *target)
{
    size_t n = strcspn(target, "?#");
    return n;
}

/* Finds host[:port] in "scheme://[user@]host[:port]/...": its start and
 * length, or NULL. */
static const char *url_authority(const char *url, size_t *len)
{
    const char *p = strstr(url, "://");
    if (p == NULL) {
        return NULL;
    }
    p += 3;
    size_t n = strcspn(p, "/?#");
    const char *at = memchr(p, '@', n); /* drop user info */
    if (at != NULL) {
        n -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    *len = n;
    return n > 0 ? p : NULL;
}

int node_span_finish(struct cbn_span *s,
                     const struct node_span_attrs *a,
                     const char *name,
                     struct sm_arena *arena)
{
    const char *op = NULL;
    if (a->http_route != NULL && a->http_route[0] != '\0') {
        op = a->http_route;
    } else if (a->url_path != NULL && a->url_path[0] != '\0') {
        op = sm_arena_strndup(arena, a->url_path, path_len(a->url_path));
        if (op == NULL) {
            return SM_ENOMEM;
        }
    } else if (a->rpc_service != NULL && a->rpc_method != NULL) {
        size_t n = strlen(a->rpc_service) + strlen(a->rpc_method) + 2;
        char *buf = sm_arena_alloc(arena, n);
        if (buf == NULL) {
            return SM_ENOMEM;
        }
        snprintf(buf, n, "%s/%s", a->rpc_service, a->rpc_method);
        op = buf;
    } else {
        op = name != NULL ? name : "";
    }
    s->operation = op;
    s->instance = a->instance != NULL ? a->instance : "";
    s->error |= a->error || (a->status_5xx && s->kind == CBN_SPAN_SERVER);
    s->peer = "";
    if (s->kind != CBN_SPAN_CLIENT) {
        return SM_OK;
    }
    if (a->peer_service != NULL && a->peer_service[0] != '\0') {
        s->peer = a->peer_service;
    } else if (a->server_address != NULL && a->server_address[0] != '\0') {
        if (a->server_port != NULL && a->server_port[0] != '\0') {
            size_t n = strlen(a->server_address) + strlen(a->server_port) + 2;
            char *buf = sm_arena_alloc(arena, n);
            if (buf == NULL) {
                return SM_ENOMEM;
            }
            snprintf(buf, n, "%s:%s", a->server_address, a->server_port);
            s->peer = buf;
        } else {
            s->peer = a->server_address;
        }
    } else if (a->url_full != NULL) {
        size_t n;
        const char *host = url_authority(a->url_full, &n);
        if (host != NULL) {
            s->peer = sm_arena_strndup(arena, host, n);
            if (s->peer == NULL) {
                return SM_ENOMEM;
            }
        }
    }
    return SM_OK;
}
