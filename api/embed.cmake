# embed.cmake - write a C file holding the bytes of a file, at build time:
#   cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake
# gives `const unsigned char NAME[]` (NUL-terminated, not counted) and
# `const size_t NAME_len`. No xxd needed: CMake reads the file as hex.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
# 16 bytes a line: "0x3c, 0x21, ..."
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n\t" bytes "${bytes}")
file(WRITE "${OUT}"
     "/* Generated from ${IN} by api/embed.cmake: do not edit. */\n"
     "#include <stddef.h>\n\n"
     "extern const unsigned char ${NAME}[];\nextern const size_t ${NAME}_len;\n\n"
     "const unsigned char ${NAME}[] = {\n\t${bytes}0x00\n};\n"
     "const size_t ${NAME}_len = ${len};\n")
