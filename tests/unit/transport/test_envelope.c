/* Tests for the envelope: round trips, the exact wire bytes, and every way
 * decoding refuses its input. */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "check.h"
#include "transport/transport.h"

/* ---- helpers ------------------------------------------------------------- */

static const uint8_t body40[40] = "forty bytes of body, give or take a few.";

static struct tp_env sample(void)
{
    struct tp_env e = {TP_MSG_SWEEP_REQ,      "peer-a", 6,
                       0x1122334455667788ull, body40,   sizeof body40};
    return e;
}

static void encode(const struct tp_env *e, struct tp_buf *buf)
{
    buf->len = 0;
    REQUIRE_OK(tp_env_encode_buf(e, buf));
}

/* Decodes and expects @rv; on failure checks that @env was untouched and
 * that a reason was given. Returns the reason. */
static const char *expect(const void *data,
                          size_t len,
                          const struct tp_env_limits *lim,
                          int rv)
{
    struct tp_env env;
    memset(&env, 0x5a, sizeof env);
    const char *why = NULL;
    int got = tp_env_decode(data, len, lim, &env, &why);
    if (got != rv) {
        check__fail(__FILE__, __LINE__, 0,
                    "decode of %zu bytes: %s (%s), "
                    "expected %s",
                    len, sm_errname(got), why ? why : "", sm_errname(rv));
    }
    CHECK(why != NULL);
    if (rv != SM_OK && got == rv) {
        CHECK(why != NULL && why[0] != '\0');
        unsigned char *raw = (unsigned char *)&env;
        for (size_t i = 0; i < sizeof env; i++) {
            if (raw[i] != 0x5a) {
                check__fail(__FILE__, __LINE__, 0, "env written on failure");
                break;
            }
        }
    }
    return why != NULL ? why : "";
}

/* A msgpack document built by hand with msgpack-c's packer. */
static msgpack_sbuffer sb;
static msgpack_packer pk;

/* Frees the document; msgpack_sbuffer_destroy() leaves a dangling pointer,
 * so the buffer is made empty again. */
static void doc_free(void)
{
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_init(&sb);
}

static void doc_start(void)
{
    doc_free();
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void key(const char *k)
{
    msgpack_pack_str_with_body(&pk, k, strlen(k));
}

enum { FV, FT, FFROM, FID, FBODY, NFIELDS };
static const char *const names[NFIELDS] = {"v", "t", "from", "id", "body"};

/* Packs field @f with a valid value. */
static void good_field(int f)
{
    key(names[f]);
    switch (f) {
        case FV:
            msgpack_pack_uint8(&pk, 1);
            break;
        case FT:
            msgpack_pack_uint8(&pk, TP_MSG_RAFT);
            break;
        case FFROM:
            msgpack_pack_str_with_body(&pk, "node-1", 6);
            break;
        case FID:
            msgpack_pack_uint64(&pk, 99);
            break;
        default:
            msgpack_pack_bin_with_body(&pk, "xyz", 3);
            break;
    }
}

/* Packs field @f with a value of the wrong msgpack type. */
static void bad_field(int f, int variant)
{
    key(names[f]);
    switch (variant) {
        case 0:
            if (f == FFROM) {
                msgpack_pack_bin_with_body(&pk, "node-1", 6); /* bin, not str */
            } else if (f == FBODY) {
                msgpack_pack_str_with_body(&pk, "xyz", 3); /* str, not bin */
            } else {
                msgpack_pack_str_with_body(&pk, "1", 1);
            }
            break;
        case 1:
            msgpack_pack_int8(&pk, -1);
            break;
        case 2:
            msgpack_pack_double(&pk, 1.0);
            break;
        case 3:
            msgpack_pack_nil(&pk);
            break;
        default:
            msgpack_pack_array(&pk, 1);
            msgpack_pack_uint8(&pk, 1);
            break;
    }
}

static const void *doc(void)
{
    return sb.data;
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip(void)
{
    static uint8_t big[70000];
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (uint8_t)(i * 7);
    }
    char longest[TP_PEER_ID_MAX + 1];
    memset(longest, 'z', TP_PEER_ID_MAX);
    longest[TP_PEER_ID_MAX] = '\0';
    const uint64_t ids[] = {0, 1, 127, 128, 65536, UINT64_MAX};
    const size_t lens[] = {0, 1, 31, 32, 255, 256, 65535, 65536, sizeof big};
    struct tp_buf buf = {0};
    for (int type = 1; type <= TP_MSG_TYPE_MAX; type++) {
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            struct tp_env e = {type,
                               k % 2 ? longest : "a",
                               k % 2 ? TP_PEER_ID_MAX : 1,
                               ids[k % (sizeof ids / sizeof ids[0])],
                               lens[k] ? big : NULL,
                               lens[k]};
            encode(&e, &buf);
            CHECK_EQ(buf.len, tp_env_size(&e));
            CHECK(buf.len <= e.body_len + TP_ENV_OVERHEAD_MAX);
            struct tp_env d;
            const char *why = "unset";
            REQUIRE_OK(tp_env_decode(buf.data, buf.len, NULL, &d, &why));
            CHECK_STR(why, "");
            CHECK_EQ(d.type, type);
            CHECK_EQ(d.id, e.id);
            CHECK_EQ(d.from_len, e.from_len);
            CHECK(memcmp(d.from, e.from, e.from_len) == 0);
            CHECK_EQ(d.body_len, e.body_len);
            if (e.body_len > 0) {
                CHECK(memcmp(d.body, big, e.body_len) == 0);
                /* Borrowed: the body points into the input. */
                CHECK((const uint8_t *)d.body > buf.data &&
                      (const uint8_t *)d.body + d.body_len ==
                          buf.data + buf.len);
            } else {
                CHECK(d.body == NULL);
            }
            CHECK((const uint8_t *)d.from > buf.data &&
                  (const uint8_t *)d.from < buf.data + buf.len);
        }
    }
    tp_buf_free(&buf);
}

/* The wire bytes are pinned: a change here is a new wire version. */
static void test_wire_bytes(void)
{
    static const uint8_t want[] = {
        0x85,                                              /* map of 5 */
        0xa1, 'v', 0x01,                                   /* "v": 1 */
        0xa1, 't', 0x03,                                   /* "t": 3 (raft) */
        0xa4, 'f', 'r',  'o',  'm',  0xa1, 'a',            /* "from": "a" */
        0xa2, 'i', 'd',  0xcd, 0x01, 0x00,                 /* "id": 256 */
        0xa4, 'b', 'o',  'd',  'y',  0xc4, 0x02, 'x', 'y', /* "body": bin */
    };
    struct tp_env e = {TP_MSG_RAFT, "a", 1, 256, "xy", 2};
    uint8_t out[sizeof want];
    size_t len = 0;
    REQUIRE_OK(tp_env_encode(&e, out, sizeof out, &len));
    REQUIRE_EQ(len, sizeof want);
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK_EQ(tp_env_size(&e), sizeof want);
    expect(want, sizeof want, NULL, SM_OK);

    /* Fields in another order decode the same. */
    doc_start();
    msgpack_pack_map(&pk, 5);
    for (int f = NFIELDS - 1; f >= 0; f--) {
        good_field(f);
    }
    struct tp_env d;
    REQUIRE_OK(tp_env_decode(sb.data, sb.size, NULL, &d, NULL));
    CHECK_EQ(d.type, TP_MSG_RAFT);
    CHECK_EQ(d.id, 99);
    CHECK_EQ(d.body_len, 3);
    doc_free();
}

static void test_encode_errors(void)
{
    struct tp_env e = sample();
    size_t need = tp_env_size(&e);
    uint8_t out[256];
    size_t len = 0;
    CHECK_EQ(tp_env_encode(&e, out, need - 1, &len), SM_ETOOBIG);
    CHECK_EQ(len, need);
    CHECK_EQ(tp_env_encode(&e, NULL, 0, &len), SM_ETOOBIG);
    CHECK_OK(tp_env_encode(&e, out, need, &len));
    CHECK_EQ(len, need);

    /* Appending keeps what the buffer held. */
    struct tp_buf buf = {0};
    REQUIRE_OK(tp_buf_reserve(&buf, 3));
    memcpy(buf.data, "abc", 3);
    buf.len = 3;
    REQUIRE_OK(tp_env_encode_buf(&e, &buf));
    CHECK_EQ(buf.len, 3 + need);
    CHECK(memcmp(buf.data, "abc", 3) == 0);
    CHECK(memcmp(buf.data + 3, out, need) == 0);
    expect(buf.data + 3, need, NULL, SM_OK);

    struct tp_env bad[] = {
        {0, "a", 1, 0, NULL, 0},
        {TP_MSG_TYPE_MAX + 1, "a", 1, 0, NULL, 0},
        {TP_MSG_RAFT, "", 0, 0, NULL, 0},
        {TP_MSG_RAFT, NULL, 0, 0, NULL, 0},
        {TP_MSG_RAFT, "a b", 3, 0, NULL, 0},
        {TP_MSG_RAFT, "a\n", 2, 0, NULL, 0},
        {TP_MSG_RAFT, "\xc3\xa9", 2, 0, NULL, 0},
        {TP_MSG_RAFT, "a", 1, 0, NULL, 5},
        {TP_MSG_RAFT,
         "0123456789012345678901234567890123456789012345678901234567890123", 64,
         0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t before = buf.len;
        CHECK_EQ(tp_env_encode(&bad[i], out, sizeof out, &len), SM_EINVAL);
        CHECK_EQ(tp_env_encode_buf(&bad[i], &buf), SM_EINVAL);
        CHECK_EQ(buf.len, before);
    }
    tp_buf_free(&buf);
}

static void test_encode_out_of_memory(void)
{
    struct tp_env e = sample();
    struct tp_buf buf = {0};
    check_heap_install();
    check_heap_fault(0, -1);
    CHECK_EQ(tp_env_encode_buf(&e, &buf), SM_ENOMEM);
    CHECK(buf.data == NULL && buf.len == 0 && buf.cap == 0);
    check_heap_fault(1000, 0);
    REQUIRE_OK(tp_env_encode_buf(&e, &buf));
    size_t len = buf.len;
    /* A failed growth leaves the content and the length as they were. */
    static uint8_t big[4096];
    struct tp_env large = {TP_MSG_SPANS, "b", 1, 1, big, sizeof big};
    check_heap_fault(0, -1);
    CHECK_EQ(tp_env_encode_buf(&large, &buf), SM_ENOMEM);
    CHECK_EQ(buf.len, len);
    expect(buf.data, buf.len, NULL, SM_OK);
    tp_buf_free(&buf);
    check_heap_uninstall();
}

/* ---- decoding rejections ------------------------------------------------- */

static void test_truncated(void)
{
    struct tp_buf buf = {0};
    struct tp_env e = sample();
    encode(&e, &buf);
    /* Copy each prefix into an exact-size block so ASan sees any read past
     * the end. */
    for (size_t n = 0; n < buf.len; n++) {
        uint8_t *p = malloc(n ? n : 1);
        REQUIRE(p != NULL);
        memcpy(p, buf.data, n);
        expect(p, n, NULL, SM_EMALFORMED);
        free(p);
    }
    expect(buf.data, buf.len, NULL, SM_OK);
    tp_buf_free(&buf);
}

static void test_trailing(void)
{
    struct tp_buf buf = {0};
    struct tp_env e = sample();
    encode(&e, &buf);
    size_t len = buf.len;
    REQUIRE_OK(tp_buf_reserve(&buf, 1));
    buf.data[buf.len++] = 0x00;
    CHECK_STR(expect(buf.data, buf.len, NULL, SM_EMALFORMED),
              "trailing bytes after the envelope");
    buf.len = len;
    /* Two envelopes back to back are one too many. */
    REQUIRE_OK(tp_env_encode_buf(&e, &buf));
    CHECK_STR(expect(buf.data, buf.len, NULL, SM_EMALFORMED),
              "trailing bytes after the envelope");
    tp_buf_free(&buf);
}

static void test_top_level(void)
{
    static const uint8_t nil[] = {0xc0};
    static const uint8_t fixint[] = {0x05};
    static const uint8_t str[] = {0xa2, 'h', 'i'};
    static const uint8_t bin[] = {0xc4, 0x01, 0x00};
    static const uint8_t arr[] = {0x92, 0x01, 0x02};
    static const uint8_t ext[] = {0xd4, 0x01, 0x00};
    static const uint8_t f64[] = {0xcb, 0, 0, 0, 0, 0, 0, 0, 0};
    const struct
    {
        const uint8_t *p;
        size_t n;
    } cases[] = {{nil, sizeof nil}, {fixint, sizeof fixint}, {str, sizeof str},
                 {bin, sizeof bin}, {arr, sizeof arr},       {ext, sizeof ext},
                 {f64, sizeof f64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_STR(expect(cases[i].p, cases[i].n, NULL, SM_EMALFORMED),
                  "not a map");
    }
    /* The empty map is a map without a version. */
    static const uint8_t empty[] = {0x80};
    CHECK_STR(expect(empty, 1, NULL, SM_EMALFORMED),
              "missing field \"v\" (wire version)");
}

static void test_version(void)
{
    const uint64_t versions[] = {0, 2, 255, UINT64_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        doc_start();
        msgpack_pack_map(&pk, 5);
        key("v");
        msgpack_pack_uint64(&pk, versions[i]);
        for (int f = FT; f < NFIELDS; f++) {
            good_field(f);
        }
        CHECK_STR(expect(doc(), sb.size, NULL, SM_EUNSUPPORTED),
                  "unknown wire version");
    }
    /* Another version may have other fields: still "unsupported". */
    doc_start();
    msgpack_pack_map(&pk, 2);
    key("payload");
    msgpack_pack_array(&pk, 0);
    key("v");
    msgpack_pack_uint8(&pk, 2);
    expect(doc(), sb.size, NULL, SM_EUNSUPPORTED);
    /* Version missing, or not an unsigned integer. */
    for (int variant = 0; variant < 5; variant++) {
        doc_start();
        msgpack_pack_map(&pk, 5);
        bad_field(FV, variant);
        for (int f = FT; f < NFIELDS; f++) {
            good_field(f);
        }
        CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED),
                  "field \"v\" is not an unsigned integer");
    }
    doc_free();
}

static void test_message_type(void)
{
    const uint64_t types[] = {0, TP_MSG_TYPE_MAX + 1, 255, 1u << 31,
                              UINT64_MAX};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        doc_start();
        msgpack_pack_map(&pk, 5);
        good_field(FV);
        key("t");
        msgpack_pack_uint64(&pk, types[i]);
        for (int f = FFROM; f < NFIELDS; f++) {
            good_field(f);
        }
        CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED),
                  "unknown message type");
    }
    for (int t = 1; t <= TP_MSG_TYPE_MAX; t++) {
        CHECK(strcmp(tp_msg_type_name(t), "unknown") != 0);
        for (int u = 1; u < t; u++) {
            CHECK(strcmp(tp_msg_type_name(t), tp_msg_type_name(u)) != 0);
        }
    }
    CHECK_STR(tp_msg_type_name(0), "unknown");
    CHECK_STR(tp_msg_type_name(TP_MSG_TYPE_MAX + 1), "unknown");
    CHECK_STR(tp_msg_type_name(TP_MSG_SWEEP_REQ), "sweep_req");
    doc_free();
}

static void test_fields(void)
{
    char want[64];
    for (int miss = 0; miss < NFIELDS; miss++) {
        doc_start();
        msgpack_pack_map(&pk, NFIELDS - 1);
        for (int f = 0; f < NFIELDS; f++) {
            if (f != miss) {
                good_field(f);
            }
        }
        const char *why = expect(doc(), sb.size, NULL, SM_EMALFORMED);
        snprintf(want, sizeof want, "missing field \"%s\"", names[miss]);
        CHECK(strncmp(why, want, strlen(want)) == 0);
    }
    for (int dup = 0; dup < NFIELDS; dup++) {
        doc_start();
        msgpack_pack_map(&pk, NFIELDS + 1);
        for (int f = 0; f < NFIELDS; f++) {
            good_field(f);
        }
        good_field(dup);
        snprintf(want, sizeof want, "duplicate field \"%s\"", names[dup]);
        CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED), want);
    }
    for (int f0 = FT; f0 < NFIELDS; f0++) {
        for (int variant = 0; variant < 5; variant++) {
            doc_start();
            msgpack_pack_map(&pk, NFIELDS);
            for (int f = 0; f < NFIELDS; f++) {
                if (f == f0) {
                    bad_field(f, variant);
                } else {
                    good_field(f);
                }
            }
            const char *why = expect(doc(), sb.size, NULL, SM_EMALFORMED);
            snprintf(want, sizeof want, "field \"%s\" is not", names[f0]);
            CHECK(strncmp(why, want, strlen(want)) == 0);
        }
    }
    /* An unknown field, a field whose key is not a string. */
    doc_start();
    msgpack_pack_map(&pk, NFIELDS + 1);
    for (int f = 0; f < NFIELDS; f++) {
        good_field(f);
    }
    key("extra");
    msgpack_pack_uint8(&pk, 1);
    CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED), "unknown field");
    doc_start();
    msgpack_pack_map(&pk, NFIELDS + 1);
    for (int f = 0; f < NFIELDS; f++) {
        good_field(f);
    }
    msgpack_pack_uint8(&pk, 7);
    msgpack_pack_uint8(&pk, 1);
    CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED),
              "a key is not a string");
    /* Keys are compared by their bytes: a prefix is not the key. */
    doc_start();
    msgpack_pack_map(&pk, NFIELDS);
    for (int f = 0; f < NFIELDS; f++) {
        if (f == FFROM) {
            key("fro");
            msgpack_pack_str_with_body(&pk, "x", 1);
        } else {
            good_field(f);
        }
    }
    CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED), "unknown field");
    doc_free();
}

static void test_sender(void)
{
    char id[TP_PEER_ID_MAX + 2];
    memset(id, 'q', sizeof id);
    const struct
    {
        const char *s;
        size_t n;
        int ok;
    } cases[] = {
        {id, TP_PEER_ID_MAX, 1},
        {id, TP_PEER_ID_MAX + 1, 0},
        {"", 0, 0},
        {"a b", 3, 0},
        {"a\tb", 3, 0},
        {"a\0b", 3, 0},
        {"\x7f", 1, 0},
        {"h\xc3\xa9", 3, 0},
        {"host.example-1_x", 16, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_EQ(tp_peer_id_valid(cases[i].s, cases[i].n), cases[i].ok);
        doc_start();
        msgpack_pack_map(&pk, NFIELDS);
        for (int f = 0; f < NFIELDS; f++) {
            if (f == FFROM) {
                key("from");
                msgpack_pack_str_with_body(&pk, cases[i].s, cases[i].n);
            } else {
                good_field(f);
            }
        }
        expect(doc(), sb.size, NULL, cases[i].ok ? SM_OK : SM_EMALFORMED);
    }
    CHECK_EQ(tp_peer_id_valid(NULL, 0), 0);
    doc_free();
}

static void test_limits(void)
{
    struct tp_buf buf = {0};
    static uint8_t body[1000];
    struct tp_env e = {TP_MSG_DECODER, "p", 1, 5, body, sizeof body};
    encode(&e, &buf);
    struct tp_env_limits lim = {buf.len, sizeof body};
    expect(buf.data, buf.len, &lim, SM_OK);
    lim.max_body = sizeof body - 1;
    CHECK_STR(expect(buf.data, buf.len, &lim, SM_ETOOBIG),
              "body larger than the limit");
    lim.max_body = sizeof body;
    lim.max_size = buf.len - 1;
    CHECK_STR(expect(buf.data, buf.len, &lim, SM_ETOOBIG),
              "envelope larger than the limit");

    /* The size is checked before a byte is parsed: garbage over the limit
     * is "too big", not "malformed". */
    uint8_t junk[64];
    memset(junk, 0xc1, sizeof junk);
    lim.max_size = sizeof junk - 1;
    expect(junk, sizeof junk, &lim, SM_ETOOBIG);
    lim.max_size = sizeof junk;
    CHECK_STR(expect(junk, sizeof junk, &lim, SM_EMALFORMED),
              "invalid msgpack byte");

    /* The defaults. */
    CHECK(TP_ENV_DEFAULT_MAX_BODY + TP_ENV_OVERHEAD_MAX ==
          TP_ENV_DEFAULT_MAX_SIZE);
    uint8_t one = 0x80;
    expect(&one, TP_ENV_DEFAULT_MAX_SIZE + 1, NULL, SM_ETOOBIG);
    tp_buf_free(&buf);
}

/* Tiny inputs that declare huge things. If any of them reached msgpack-c,
 * it would try to reserve gigabytes (and ASan would abort the test). */
static void test_huge_declarations(void)
{
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    static const uint8_t map16[] = {0xde, 0xff, 0xff, 0xa1, 'v', 0x01};
    static const uint8_t bin32[] = {0x81, 0xa4, 'b',  'o',  'd', 'y',
                                    0xc6, 0xff, 0xff, 0xff, 0xf0};
    static const uint8_t str32[] = {0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'v'};
    static const uint8_t ext32[] = {0x81, 0xa1, 'v',  0xc9, 0xff,
                                    0xff, 0xff, 0xff, 0x01};
    static const uint8_t inner[] = {0x81, 0xa1, 'v',  0xdd, 0x10,
                                    0x00, 0x00, 0x00, 0x01, 0x02};
    static const uint8_t innermap[] = {0x81, 0xa1, 'v',  0xdf, 0x10,
                                       0x00, 0x00, 0x00, 0x01, 0x02};
    const struct
    {
        const uint8_t *p;
        size_t n;
        const char *why;
    } cases[] = {
        {map32, sizeof map32, "element count larger than the input"},
        {arr32, sizeof arr32, "element count larger than the input"},
        {map16, sizeof map16, "element count larger than the input"},
        {bin32, sizeof bin32, "truncated (a length runs past the end)"},
        {str32, sizeof str32, "truncated (a length runs past the end)"},
        {ext32, sizeof ext32, "truncated (a length runs past the end)"},
        {inner, sizeof inner, "element count larger than the input"},
        {innermap, sizeof innermap, "element count larger than the input"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_STR(expect(cases[i].p, cases[i].n, NULL, SM_EMALFORMED),
                  cases[i].why);
    }

    /* Many small elements, each real: refused by count, not by memory. */
    static uint8_t many[1 + 2 + 40000];
    many[0] = 0xdc;
    many[1] = 0x9c;
    many[2] = 0x40; /* array16 of 40000 */
    memset(many + 3, 0xc0, 40000);
    CHECK_STR(expect(many, sizeof many, NULL, SM_EMALFORMED),
              "too many fields");
    doc_start();
    msgpack_pack_map(&pk, 17);
    for (int i = 0; i < 17; i++) {
        msgpack_pack_uint8(&pk, (uint8_t)i);
        msgpack_pack_nil(&pk);
    }
    CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED), "too many fields");
    /* Nesting. */
    doc_start();
    msgpack_pack_map(&pk, 1);
    key("v");
    for (int i = 0; i < 8; i++) {
        msgpack_pack_array(&pk, 1);
    }
    msgpack_pack_nil(&pk);
    CHECK_STR(expect(doc(), sb.size, NULL, SM_EMALFORMED), "nested too deeply");
    doc_free();
}

static void test_invalid_bytes(void)
{
    struct tp_buf buf = {0};
    struct tp_env e = sample();
    encode(&e, &buf);
    /* 0xc1 anywhere in the structure (not inside a str or bin). */
    buf.data[1] = 0xc1;
    CHECK_STR(expect(buf.data, buf.len, NULL, SM_EMALFORMED),
              "invalid msgpack byte");
    static const uint8_t lone[] = {0xc1};
    expect(lone, 1, NULL, SM_EMALFORMED);
    CHECK_STR(expect("", 0, NULL, SM_EMALFORMED), "empty");
    tp_buf_free(&buf);
}

/* Every single-byte change of a valid envelope either decodes to something
 * valid or is refused; nothing else (ASan watches the reads). */
static void test_mutations(void)
{
    struct tp_buf buf = {0};
    struct tp_env e = sample();
    encode(&e, &buf);
    int accepted = 0, refused = 0;
    for (size_t i = 0; i < buf.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf.data[i] ^= (uint8_t)(1u << bit);
            struct tp_env d;
            int rv = tp_env_decode(buf.data, buf.len, NULL, &d, NULL);
            CHECK(rv == SM_OK || rv == SM_EMALFORMED || rv == SM_EUNSUPPORTED);
            if (rv == SM_OK) {
                accepted++;
                CHECK(tp_peer_id_valid(d.from, d.from_len));
            } else {
                refused++;
            }
            buf.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK(accepted > 0 && refused > 0);
    tp_buf_free(&buf);
}

static const struct check_test tests[] = {
    {"round trip of every type", test_roundtrip},
    {"pinned wire bytes", test_wire_bytes},
    {"encoding errors", test_encode_errors},
    {"encoding out of memory", test_encode_out_of_memory},
    {"truncated at every offset", test_truncated},
    {"trailing bytes", test_trailing},
    {"top level not a map", test_top_level},
    {"wire version", test_version},
    {"message type", test_message_type},
    {"missing, duplicate, unknown and mistyped fields", test_fields},
    {"sender id", test_sender},
    {"size limits", test_limits},
    {"huge declared lengths in tiny inputs", test_huge_declarations},
    {"invalid bytes", test_invalid_bytes},
    {"single-bit mutations", test_mutations},
};

CHECK_MAIN(tests, NULL, NULL)
