"""transform.py IN.cu OUT.cpp: a kernel source as plain C++ for the emulator (tests/emu):
kernel<<<grid, block, smem, stream>>>(args) becomes emu_launch("kernel", kernel, grid, block,
smem, stream, args), and curand_kernel.h (device code) is dropped; emu.h supplies the
two cuRAND functions the kernels use."""
import re, sys
src = open(sys.argv[1]).read()
src = src.replace('#include <curand_kernel.h>', '')
out, i = [], 0
while True:
    j = src.find('<<<', i)
    if j < 0: out.append(src[i:]); break
    # the kernel expression before <<<: identifier with optional <...>
    k = j
    if src[k-1] == '>':
        depth = 0
        while True:
            k -= 1
            if src[k] == '>': depth += 1
            elif src[k] == '<':
                depth -= 1
                if depth == 0: break
    m = re.search(r'[A-Za-z_]\w*$', src[:k])
    start = m.start()
    name = m.group(0)
    e = src.find('>>>', j)
    cfg = src[j+3:e]
    p = src.find('(', e)
    assert src[e+3:p].strip() == '', src[e:p+5]
    out.append(src[i:start])
    out.append('emu_launch("%s", %s, %s, ' % (name, src[start:j], cfg))
    i = p + 1
open(sys.argv[2], 'w').write(''.join(out))
