# Fails the build when a per-ISA kernel object has a static initializer (.init_array or .ctors):
# it would run when the module loads, on every CPU, with instructions that CPU may lack.
# Usage: cmake -DOBJDUMP=objdump -DOBJECTS="a.o|b.o" -P check_no_static_init.cmake
string(REPLACE "|" ";" objects "${OBJECTS}")
foreach(obj IN LISTS objects)
  execute_process(COMMAND "${OBJDUMP}" -h "${obj}" OUTPUT_VARIABLE sections RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND sections MATCHES "\\.init_array|\\.ctors")
    message(FATAL_ERROR "${obj} has a static initializer; per-ISA sources must not (see CMakeLists.txt)")
  endif()
endforeach()
