# `cmake --install` lays out headers under include/ringattn/, the libraries, and a CMake
# package so a user's project can `find_package(RingAttention)` and link
# RingAttention::ringattn.
include(CMakePackageConfigHelpers)

set(RA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/RingAttention)
set(RA_EXPORTED_TARGETS ra_options ra_runtime ra_comm ra_attention ra_train ringattn)
if(TARGET ra_attention_kernels)
  list(APPEND RA_EXPORTED_TARGETS ra_attention_kernels)
endif()
if(TARGET ra_sparse_kernels)
  list(APPEND RA_EXPORTED_TARGETS ra_sparse_kernels)
endif()

install(TARGETS ${RA_EXPORTED_TARGETS}
  EXPORT RingAttentionTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

foreach(dir runtime comm attention)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringattn
    FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh")
endforeach()

install(EXPORT RingAttentionTargets
  NAMESPACE RingAttention::
  DESTINATION ${RA_INSTALL_CMAKEDIR})

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/RingAttentionConfig.cmake.in
  ${PROJECT_BINARY_DIR}/RingAttentionConfig.cmake
  INSTALL_DESTINATION ${RA_INSTALL_CMAKEDIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/RingAttentionConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/RingAttentionConfig.cmake
  ${PROJECT_BINARY_DIR}/RingAttentionConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/FindNCCL.cmake
  DESTINATION ${RA_INSTALL_CMAKEDIR})
