# Locates LibTorch through the Python torch package (the PyPI wheel ships it).
# FWP_PYTHON: the interpreter to ask; defaults to the project's .venv, then python3.
function(fwp_detect_torch out_var)
  if(NOT FWP_PYTHON)
    if(EXISTS ${PROJECT_SOURCE_DIR}/.venv/bin/python)
      set(FWP_PYTHON ${PROJECT_SOURCE_DIR}/.venv/bin/python CACHE FILEPATH "Python with torch")
    else()
      find_program(FWP_PYTHON NAMES python3 python)
    endif()
  endif()
  set(found OFF)
  if(FWP_PYTHON AND NOT Torch_DIR)
    execute_process(
      COMMAND ${FWP_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE rc ERROR_QUIET)
    if(rc EQUAL 0 AND EXISTS ${prefix}/Torch/TorchConfig.cmake)
      set(Torch_DIR ${prefix}/Torch CACHE PATH "LibTorch CMake config" FORCE)
    endif()
  endif()
  if(Torch_DIR AND EXISTS ${Torch_DIR}/TorchConfig.cmake)
    set(found ON)
  endif()
  set(${out_var} ${found} PARENT_SCOPE)
endfunction()
