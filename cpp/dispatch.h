// Runtime ISA selection: which kernel table runs, chosen once at start-up from CPUID/XGETBV
// and capped by the CPPCONV_MAX_ISA environment variable.
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

}  // namespace cppconv
