/* wilson: the Wilson score interval of a binomial proportion (bench accuracy's 95% interval).
 * Header-only so that tests/test_wilson.c checks the arithmetic without the tool's objects.
 *
 * For k successes of n trials and z (1.96 for 95%), with p = k/n:
 *   centre = (p + z^2/(2n)) / (1 + z^2/n)
 *   half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2))
 * and the interval [centre - half, centre + half], clipped to [0, 1]. Unlike p +- z*se it
 * stays inside [0, 1] and is not empty at k = 0 or k = n. n = 0 gives [0, 1].
 */
#ifndef ZP_WILSON_H
#define ZP_WILSON_H

#include <math.h>

#define WILSON_Z95 1.959963984540054

static inline void wilson_interval(int k, int n, double z, double *lo, double *hi) {
    if (n <= 0) {
        *lo = 0, *hi = 1;
        return;
    }
    double p = (double)k / n, z2n = z * z / n;
    double centre = (p + z2n / 2) / (1 + z2n);
    double half = z / (1 + z2n) * sqrt(p * (1 - p) / n + z2n / (4.0 * n));
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
}

#endif
