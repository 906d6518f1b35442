/* A dynamically linked program: run through the dynamic loader by the
 * loader tests (`ld-linux-x86-64.so.2 FILE`). */
#include <stdio.h>

int main(void) {
    puts("hello");
    return 0;
}
