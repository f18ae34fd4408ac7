/* Runs a CGI program N times, one at a time, the way a web server does:
 * fork, stdin from a file, stdout into a pipe that is read to the end, wait.
 * Prints one JSON line: the wall time of each run (fork to reaped, in
 * microseconds) and the CPU time (user + system) of each run from wait4.
 *
 *   spawn N STDIN_FILE PROGRAM     (the environment is passed on as it is) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: spawn N STDIN_FILE PROGRAM\n");
        return 2;
    }
    int n = atoi(argv[1]);
    char buf[65536];
    printf("{\"wall_us\": [");
    double *wall = calloc((size_t)n, sizeof *wall), *cpu = calloc((size_t)n, sizeof *cpu);
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe(p) != 0) { perror("pipe"); return 1; }
        double start = now_us();
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            int in = open(argv[2], O_RDONLY);
            if (in < 0) _exit(126);
            dup2(in, 0);
            dup2(p[1], 1);
            close(p[0]);
            close(p[1]);
            close(in);
            execl(argv[3], argv[3], (char *)NULL);
            _exit(127);
        }
        close(p[1]);
        while (read(p[0], buf, sizeof buf) > 0) {
        }
        close(p[0]);
        int status;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 1; }
        wall[i] = now_us() - start;
        cpu[i] = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "spawn: %s exited with status %d\n", argv[3], status);
            return 1;
        }
    }
    for (int i = 0; i < n; i++) printf("%s%.1f", i ? ", " : "", wall[i]);
    printf("], \"cpu_us\": [");
    for (int i = 0; i < n; i++) printf("%s%.1f", i ? ", " : "", cpu[i]);
    printf("]}\n");
    return 0;
}
