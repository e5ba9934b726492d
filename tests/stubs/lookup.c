/* A pod's stub resolver in miniature: getaddrinfo() for each name on the command line, the
 * way an application calls it (AF_UNSPEC: A and AAAA asked together), through the libc it is
 * built with. tests/resolvers.rs builds it twice, with cc (glibc) and musl-gcc (musl).
 *
 * Prints one line per lookup: NAME, "ok" or "fail", the milliseconds the call took, and the
 * addresses found (comma-separated) or the error; tab-separated. LOOKUP_INTERVAL_MS, when
 * set, pauses that long between lookups. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void pause_ms(long ms) {
    struct timespec p = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&p, NULL);
}

int main(int argc, char **argv) {
    const char *interval = getenv("LOOKUP_INTERVAL_MS");
    long pause = interval ? atol(interval) : 0;
    for (int i = 1; i < argc; i++) {
        if (i > 1 && pause > 0)
            pause_ms(pause);
        struct addrinfo hints = {0}, *found = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM; /* one entry per address, not one per socket type */
        double start = now_ms();
        int rc = getaddrinfo(argv[i], NULL, &hints, &found);
        double took = now_ms() - start;
        if (rc != 0) {
            printf("%s\tfail\t%.1f\t%s\n", argv[i], took, gai_strerror(rc));
            continue;
        }
        printf("%s\tok\t%.1f\t", argv[i], took);
        const char *separator = "";
        for (struct addrinfo *a = found; a != NULL; a = a->ai_next) {
            char text[INET6_ADDRSTRLEN];
            const void *address = a->ai_family == AF_INET
                ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
            if (inet_ntop(a->ai_family, address, text, sizeof text) != NULL) {
                printf("%s%s", separator, text);
                separator = ",";
            }
        }
        printf("\n");
        freeaddrinfo(found);
    }
    return 0;
}
