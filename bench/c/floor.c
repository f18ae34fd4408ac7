/* The FastCGI floor: a minimal libfcgi responder (Debian's libfcgi-dev).
 *   floor PAGE   answers every request 200 with the bytes of the file PAGE
 *   floor gate   answers every request 204 with X-Webauth-User (a gate that
 *                always says yes, for nginx auth_request)
 * The answer is built once; each request costs libfcgi's record layer and
 * one write, nothing else. */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    static char answer[1 << 20];
    size_t len = 0;
    if (argc == 2 && strcmp(argv[1], "gate") == 0) {
        len = (size_t)snprintf(answer, sizeof answer, "Status: 204 No Content\r\nX-Webauth-User: john\r\n\r\n");
    } else if (argc == 2) {
        FILE *f = fopen(argv[1], "rb");
        if (!f) { perror(argv[1]); return 1; }
        len = (size_t)snprintf(answer, sizeof answer, "Content-Type: text/html; charset=utf-8\r\n\r\n");
        len += fread(answer + len, 1, sizeof answer - len, f);
        fclose(f);
    } else {
        fprintf(stderr, "usage: floor PAGE | floor gate\n");
        return 2;
    }
    FCGX_Stream *in, *out, *err;
    FCGX_ParamArray envp;
    while (FCGX_Accept(&in, &out, &err, &envp) >= 0) {
        FCGX_PutStr(answer, (int)len, out);
    }
    return 0;
}
