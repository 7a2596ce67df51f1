/* profile.h — CROSSRANK_PROFILE: one line on stderr per forward pass saying where its time went. */
#ifndef CR_PROFILE_H
#define CR_PROFILE_H

/* Whether CROSSRANK_PROFILE is set to anything but "" or "0" (read at every call: passes are long). */
int cr_profile_wanted(void);

/* A monotonic clock, in seconds. */
double cr_seconds_now(void);

/* "crossrank pass: <head>, <total> ms: <name> <share>% ... rest <share>%" on stderr, the rest being
 * total less the n phases' seconds. */
void cr_profile_report(const char *head, double total, const double *seconds, const char *const *names, int n);

#endif
