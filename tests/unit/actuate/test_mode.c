/* Tests for actuate's --actuate modes. */
#include "actuate/actuate.h"
#include "base/err.h"
#include "check.h"

static void test_modes(void)
{
    enum act_mode m = ACT_MODE_OFF;
    CHECK_OK(act_mode_parse("dry-run", &m));
    CHECK_EQ(m, ACT_MODE_DRY_RUN);
    CHECK_OK(act_mode_parse("on", &m));
    CHECK_EQ(m, ACT_MODE_ON);
    CHECK_EQ(act_mode_parse("ON", &m), SM_EINVAL);
    CHECK_EQ(act_mode_parse("", &m), SM_EINVAL);
    CHECK_EQ(m, ACT_MODE_ON);
    CHECK_EQ(ACT_MODE_DEFAULT, ACT_MODE_DRY_RUN);
    CHECK_OK(act_mode_parse("approve", &m));
    CHECK_EQ(m, ACT_MODE_APPROVE);
    for (int i = ACT_MODE_DRY_RUN; i <= ACT_MODE_APPROVE; i++) {
        enum act_mode back;
        CHECK_OK(act_mode_parse(act_mode_name((enum act_mode)i), &back));
        CHECK_EQ(back, i);
    }
    CHECK_STR(act_mode_name((enum act_mode)9), "unknown");
}

static const struct check_test tests[] = {
    {"modes", test_modes},
};

CHECK_MAIN(tests, NULL, NULL)
