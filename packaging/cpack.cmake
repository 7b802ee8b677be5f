# The Debian package (`cpack` in the build tree, or `packaging/agentcron-dev package`): what
# `cmake --install` installs, as agentcron_<version>_amd64.deb. Configure with
# CMAKE_INSTALL_PREFIX=/usr (the dev script does) so that the units and /etc paths are Debian's.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME agentcron)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "agentcron maintainers <agentcron@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "runs due agent tasks from PostgreSQL on a cron schedule")
# The synopsis is the summary; these lines are the extended description (under 80 columns).
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "agentcron takes due tasks out of a PostgreSQL table in bounded
batches and runs them through handlers (notify, http, exec), under
per-query timeouts, each task's failure isolated, through a small bounded
connection pool. It runs as a systemd service (agentcron.service), as
one-shot batches (agentcron-once.timer) or in a container; many copies
may serve one database.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from the binary's shared libraries
# and the time zone database, read at run time (/usr/share/zoneinfo) for tasks' and schedules'
# `timezone`: no library of ours depends on it, so a minimal system could lack it.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "tzdata")
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/conffiles ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_SOURCE_DIR}/packaging/cpack_project.cmake)
include(CPack)
