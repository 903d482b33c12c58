// Runtime ISA selection: which kernel table runs, chosen once at start-up from CPUID/XGETBV
// and capped by the CPPCONV_MAX_ISA environment variable, and which CPU features (CpuFeature)
// the tables' feature-guarded entries may use.  CPPCONV_MAX_ISA names one of max_isa_levels():
// an ISA (no features beyond it) or a feature level (every ISA, the features up to it).
#pragma once
#include <string>
#include <vector>

#include "kernels/kernel_table.h"

namespace cppconv {

// ISAs compiled into this build that this CPU and OS can run, weakest first, up to the
// CPPCONV_MAX_ISA cap.
std::vector<std::string> available_isas();
// The ISA chosen at start-up (the strongest available, capped by CPPCONV_MAX_ISA).
std::string default_isa();
// The table in use now.  Thread-safe to read.
const KernelTable& active_table();
// Selects another available ISA (tests sweep them all); throws std::invalid_argument.
void select_isa(const std::string& name);
// The table of a given available ISA, without changing the selection.
const KernelTable& table_for_isa(const std::string& name);

// The CpuFeature bits this process may use: what the CPU and OS support, up to the cap.
unsigned cpu_features();
bool has_cpu_features(unsigned needed);
// Names of the bits in cpu_features(), in CpuFeature order ("avx512_vnni", "avx512_bf16",
// "amx_int8", "amx_bf16").
std::vector<std::string> cpu_feature_names(unsigned features);
// Every value CPPCONV_MAX_ISA can take on this machine, weakest first: the available ISAs,
// then the feature levels whose features this CPU has (before the cap).
std::vector<std::string> max_isa_levels();

}  // namespace cppconv
