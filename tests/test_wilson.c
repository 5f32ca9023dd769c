/* test_wilson: bench accuracy's 95% Wilson interval (tools/wilson.h) against values computed
 * independently (Python, double precision, z = 1.959964) to 1e-4: 5/10 = [0.2366, 0.7634]
 * (the usual textbook example), the edges 0/n and n/n, 23/50 and 43/50 as in
 * docs/ACCURACY.md, and n = 0. */
#include "tests/testlib.h"
#include "tools/wilson.h"

static void check(int k, int n, double lo, double hi) {
    double l, h;
    wilson_interval(k, n, WILSON_Z95, &l, &h);
    CHECKF(fabs(l - lo) < 1e-4 && fabs(h - hi) < 1e-4, "%d/%d: [%.5f, %.5f], want [%.4f, %.4f]", k,
           n, l, h, lo, hi);
}

int main(void) {
    check(5, 10, 0.2366, 0.7634);
    check(0, 10, 0.0, 0.2775);
    check(10, 10, 0.7225, 1.0);
    check(23, 50, 0.3297, 0.5960);
    check(43, 50, 0.7381, 0.9305);
    check(1, 3, 0.0615, 0.7923);
    check(0, 0, 0.0, 1.0);
    return test_done("test_wilson");
}
