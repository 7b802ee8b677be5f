# Read by cpack when it runs (CPACK_PROJECT_CONFIG_FILE): the package's paths (conffiles, the
# units' ExecStart) are Debian's only with the prefix /usr.
if(CPACK_GENERATOR STREQUAL "DEB" AND NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "agentcron's .deb needs CMAKE_INSTALL_PREFIX=/usr (got ${CPACK_PACKAGING_INSTALL_PREFIX}); "
                      "packaging/agentcron-dev package configures it")
endif()
