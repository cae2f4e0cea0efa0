/* Tests for the cluster secret: generation, file form, strict parsing. */
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "check.h"
#include "transport/transport.h"

static void setup(void)
{
    REQUIRE_OK(tp_init());
}

static void test_roundtrip(void)
{
    struct tp_secret a, b;
    tp_secret_generate(&a);
    tp_secret_generate(&b);
    CHECK(memcmp(a.key, b.key, sizeof a.key) != 0);
    char text[TP_SECRET_HEX_SIZE];
    tp_secret_format(&a, text);
    CHECK_EQ(strlen(text), 65);
    CHECK(text[64] == '\n');
    struct tp_secret parsed;
    CHECK_OK(tp_secret_parse(text, strlen(text), &parsed));
    CHECK(memcmp(parsed.key, a.key, sizeof a.key) == 0);
    tp_secret_wipe(&parsed);
    static const uint8_t zero[TP_SECRET_SIZE];
    CHECK(memcmp(parsed.key, zero, sizeof zero) == 0);
}

static void test_parse_strict(void)
{
    const char *hex =
        "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff";
    struct tp_secret s;
    CHECK_OK(tp_secret_parse(hex, 64, &s));
    CHECK_EQ(s.key[0], 0x00);
    CHECK_EQ(s.key[10], 0xaa);
    CHECK_EQ(s.key[31], 0xff);
    char padded[80];
    snprintf(padded, sizeof padded, " \t%s\r\n", hex);
    CHECK_OK(tp_secret_parse(padded, strlen(padded), &s));

    memset(&s, 0x5a, sizeof s);
    CHECK_EQ(tp_secret_parse(hex, 63, &s), SM_EMALFORMED);
    CHECK_EQ(tp_secret_parse("", 0, &s), SM_EMALFORMED);
    char bad[65];
    memcpy(bad, hex, 64);
    bad[64] = '\0';
    bad[17] = 'g';
    CHECK_EQ(tp_secret_parse(bad, 64, &s), SM_EMALFORMED);
    bad[17] = ' ';
    CHECK_EQ(tp_secret_parse(bad, 64, &s), SM_EMALFORMED);
    char longer[70];
    snprintf(longer, sizeof longer, "%s00", hex);
    CHECK_EQ(tp_secret_parse(longer, strlen(longer), &s), SM_EMALFORMED);
    /* Failed parses leave the output untouched. */
    CHECK_EQ(s.key[0], 0x5a);
}

struct seen
{
    int nng, sodium, msgpack;
};

static void count_library(void *arg, const char *name, const char *version)
{
    struct seen *s = arg;
    s->nng += strcmp(name, "nng") == 0 && strcmp(version, "1.5.2") >= 0;
    s->sodium += strcmp(name, "libsodium") == 0;
    s->msgpack += strcmp(name, "msgpack-c") == 0;
}

static void test_libraries(void)
{
    struct seen seen = {0, 0, 0};
    tp_libraries(count_library, &seen);
    CHECK_EQ(seen.nng, 1);
    CHECK_EQ(seen.sodium, 1);
    CHECK_EQ(seen.msgpack, 1);
}

static void test_credentials(void)
{
    struct tp_secret s, other;
    tp_secret_generate(&s);
    tp_secret_generate(&other);
    char h[TP_AUTH_HEADER_MAX];
    uint8_t mac[TP_MAC_SIZE];
    const char *why;
    tp_credential_sign(&s, "POST", "/v1/flush", 1000, "{}", 2, h);
    CHECK(strncmp(h, "SagemeshHMAC ts=1000,mac=", 25) == 0);
    CHECK_OK(tp_credential_verify(&s, "POST", "/v1/flush", h, 1030, 60, "{}", 2,
                                  mac, &why));
    /* Anything changed, or a wrong key, or an old timestamp: refused. */
    CHECK_EQ(tp_credential_verify(&other, "POST", "/v1/flush", h, 1030, 60,
                                  "{}", 2, mac, &why),
             SM_EAUTH);
    CHECK(strstr(why, "wrong cluster secret") != NULL);
    CHECK_EQ(tp_credential_verify(&s, "POST", "/v1/train", h, 1030, 60, "{}", 2,
                                  mac, &why),
             SM_EAUTH);
    CHECK_EQ(tp_credential_verify(&s, "POST", "/v1/flush", h, 1030, 60, "{ }",
                                  3, mac, &why),
             SM_EAUTH);
    CHECK_EQ(tp_credential_verify(&s, "POST", "/v1/flush", h, 1100, 60, "{}", 2,
                                  mac, &why),
             SM_EAUTH);
    CHECK(strstr(why, "expired") != NULL);
    CHECK_EQ(tp_credential_verify(&s, "POST", "/v1/flush", h, 900, 60, "{}", 2,
                                  mac, &why),
             SM_EAUTH);
    static const char *const bad[] = {
        "", "Bearer x", "SagemeshHMAC ts=,mac=", "SagemeshHMAC ts=1000,mac=zz",
        "SagemeshHMAC ts=1000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(tp_credential_verify(&s, "POST", "/v1/flush", bad[i], 1000, 60,
                                      "{}", 2, mac, &why),
                 SM_EAUTH);
    }
}

static const struct check_test tests[] = {
    {"credentials", test_credentials},
    {"roundtrip", test_roundtrip},
    {"parse is strict", test_parse_strict},
    {"libraries", test_libraries},
};

CHECK_MAIN(tests, setup, NULL)
