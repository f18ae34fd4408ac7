/* The CGI spawn floor: the smallest CGI program, dynamically linked as a C
 * program usually is. */
#include <stdio.h>

int main(void) {
    fputs("Content-Type: text/plain\r\n\r\nhello\n", stdout);
    return 0;
}
