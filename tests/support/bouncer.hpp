// Bouncer: Debian's real PgBouncer in front of one test database, in transaction-pooling mode
// with one server connection, so that several clients share it and nothing session-scoped lasts.
#pragma once
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <string>

#include "support/loopback.hpp"
#include "support/test_db.hpp"

namespace agentcron::testing {

using namespace std::chrono_literals;

// A PgBouncer for one test database: transaction pooling, one server connection.
class Bouncer {
 public:
  explicit Bouncer(const TestDatabase& db) {
    dir_ = "/tmp/agentcron-pgbouncer-" + std::to_string(::getpid()) + "-" + db.name();
    std::filesystem::create_directories(dir_);
    if (::geteuid() == 0) std::filesystem::permissions(dir_, std::filesystem::perms::all);
    // A port the kernel just handed out is free, but may be taken again before pgbouncer binds
    // it (by an outgoing connection, say): a few tries.
    for (int attempt = 0; attempt < 3 && !ready_; ++attempt) {
      stop();
      port_ = free_port();
      start(db);
      ready_ = eventually([&] {
        if (exited()) return false;
        try {
          pqxx::connection c("host=127.0.0.1 port=" + std::to_string(port_) + " user=agentcron dbname=" + db.name());
          return true;
        } catch (const pqxx::broken_connection&) {
          return false;
        }
      }, 10s) && !exited();
    }
    url_ = "postgresql://agentcron@127.0.0.1:" + std::to_string(port_) + "/" + db.name();
  }
  ~Bouncer() {
    stop();
    std::filesystem::remove_all(dir_);
  }
  bool ready() const { return ready_; }
  const std::string& url() const { return url_; }
  std::string log() const {
    std::ifstream in(dir_ + "/pgbouncer.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  static int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = bind_loopback(fd, 0);
    ::close(fd);
    return port;
  }
  void start(const TestDatabase& db) {
    std::string server = server_conninfo();  // host=… port=… user=…
    std::ofstream(dir_ + "/users.txt") << "\"agentcron\" \"\"\n";
    std::ofstream(dir_ + "/pgbouncer.ini")
        << "[databases]\n" << db.name() << " = " << server << " dbname=" << db.name() << "\n"
        << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port_ << "\nunix_socket_dir =\n"
        << "auth_type = trust\nauth_file = " << dir_ << "/users.txt\npool_mode = transaction\n"
        << "default_pool_size = 1\nmax_client_conn = 50\nlogfile = " << dir_ << "/pgbouncer.log\n"
        << "pidfile = " << dir_ << "/pgbouncer.pid\nignore_startup_parameters = extra_float_digits,options\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      std::string ini = dir_ + "/pgbouncer.ini";
      if (::geteuid() == 0)  // pgbouncer refuses to run as root
        ::execl("/usr/sbin/pgbouncer", "pgbouncer", "-u", "postgres", ini.c_str(), nullptr);
      else
        ::execl("/usr/sbin/pgbouncer", "pgbouncer", ini.c_str(), nullptr);
      ::_exit(127);
    }
  }
  // Whether pgbouncer has exited (it does at once when its port is taken); reaps it then.
  bool exited() {
    if (pid_ <= 0) return true;
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string dir_, url_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace agentcron::testing
