"""Times two conv algorithms against each other on a few shapes, alternating rounds so that
host noise hits both alike, and prints the best median GFLOP/s of each (docs/tuning.md).

    python tools/ab_algorithms.py
"""
import numpy as np, time, cppconv, sys
from cppconv._conv import _conv_with_algorithm
def med(f, n=40):
    ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return np.median(ts)
shapes=[(8,32,112,1,1),(16,64,56,1,1),(32,128,56,1,1),(64,64,56,1,1),(32,192,28,1,1)]
for (c,k,h,kh,s) in shapes:
    x=np.random.rand(1,c,h,h).astype('f'); w=np.random.rand(k,c,kh,kh).astype('f'); b=np.random.rand(k).astype('f')
    fl=2*c*k*h*h*kh*kh
    isa = cppconv._native.selected_isa()
    algs=[a for a in cppconv._native.conv_algorithms() if a.split("__")[-1].startswith(isa) and a.startswith(("conv2d_channelvec_f32","conv2d_pixelvec_f32"))]
    fs={a:(lambda a=a: _conv_with_algorithm(a,x,w,b)) for a in algs}
    for f in fs.values(): f(); f()
    best={a:1e9 for a in algs}
    for r in range(6):
        for a,f in fs.items(): best[a]=min(best[a],med(f))
    print(c,k,h, {a.split('_')[1]: round(fl/best[a]/1e9,1) for a in algs})
