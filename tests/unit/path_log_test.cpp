// The access log's path list: a pure part of the data paths.
#include "datapath/report.hpp"

#include <catch2/catch.hpp>

using namespace spliced::datapath;

TEST_CASE("the path list names every data path a connection used, in order, once each time it moved") {
    path_log log;
    CHECK(log.text() == "-");
    log.ran_on(kind::splice);
    log.ran_on(kind::splice);
    CHECK(log.text() == "splice");
    log.ran_on(kind::sockmap);
    CHECK(log.text() == "splice+sockmap");
    log.ran_on(kind::copy);
    log.ran_on(kind::copy);  // the second direction demoted too
    CHECK(log.text() == "splice+sockmap+copy");
    CHECK(log.first() == kind::splice);
}
