/* profile.c — CROSSRANK_PROFILE's clock and its one line per pass. */
#include "profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cr_profile_wanted(void) {
    const char *v = getenv("CROSSRANK_PROFILE");
    return v && *v && strcmp(v, "0") != 0;
}

double cr_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cr_profile_report(const char *head, double total, const double *seconds, const char *const *names, int n) {
    char line[512];
    double timed = 0.0, scale = total > 0 ? 100.0 / total : 0.0;
    int at = snprintf(line, sizeof line, "crossrank pass: %s, %.1f ms:", head, 1e3 * total);
    for (int i = 0; i < n && at > 0 && at < (int)sizeof line; i++) {
        timed += seconds[i];
        at += snprintf(line + at, sizeof line - (size_t)at, " %s %.1f%%", names[i], scale * seconds[i]);
    }
    if (at > 0 && at < (int)sizeof line)
        snprintf(line + at, sizeof line - (size_t)at, " rest %.1f%%", scale * (total - timed));
    fprintf(stderr, "%s\n", line);
}
