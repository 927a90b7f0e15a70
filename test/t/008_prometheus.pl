# The shipped queries file works with prometheus-postgres-exporter: the
# exporter, pointed at a cluster over loopback, publishes the rate_limiter
# metrics with the exact counts of the calls made.  The exporter comes from
# the Debian package prometheus-postgres-exporter (scripts/common.sh
# installs it); without it this test fails, it does not skip.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# How long the exporter may take to serve its first complete scrape.
my $scrape_timeout_s = 60;

my ($exporter) = grep { -x $_ } map { File::Spec->catfile($_, 'prometheus-postgres-exporter') }
  (split(/:/, $ENV{PATH} // ''), '/usr/bin');
if (!defined $exporter)
{
	fail('prometheus-postgres-exporter is installed (apt-get install prometheus-postgres-exporter; '
		  . 'scripts/common.sh rl_install_packages does it)');
	done_testing();
	exit;
}
my $queries = File::Spec->rel2abs(
	File::Spec->catfile(dirname(__FILE__), '..', '..', 'contrib', 'prometheus', 'rate_limiter_queries.yaml'));
ok(-r $queries, "the queries file exists: $queries");

my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'rate_limiter'");
$node->append_conf('postgresql.conf', "listen_addresses = '127.0.0.1'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION rate_limiter');

# 5 decisions: 2 requests allowed then 2 denied, 1 allocation of 40 tokens.
$node->safe_psql('postgres', "SELECT set_user_rate_limit('prom_u', 2, '3650 days')");
$node->safe_psql('postgres', "SELECT set_rate_limit('prom_t', 100, '3650 days')");
$node->safe_psql('postgres', "SELECT allowed FROM check_rate_limit('prom_u')") for 1 .. 4;
$node->safe_psql('postgres', "SELECT tokens_allocated FROM allocate_tokens('prom_t', 40, 'high')");

my $port = PostgreSQL::Test::Cluster::get_free_port();
local $ENV{DATA_SOURCE_NAME} =
  'host=127.0.0.1 port=' . $node->port . ' user=postgres dbname=postgres sslmode=disable';
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[
		$exporter, "--web.listen-address=127.0.0.1:$port",
		"--extend.query-path=$queries", '--disable-default-metrics',
		'--disable-settings-metrics'
	],
	'>', \$out, '2>', \$err);

# Scrape until the rate_limiter namespace shows up (the exporter connects
# lazily, on the first scrape).
my $http = HTTP::Tiny->new(timeout => 5);
my $body = '';
my $deadline = time() + $scrape_timeout_s;
while (time() < $deadline)
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	if ($res->{success} && $res->{content} =~ /^rate_limiter_total_checks\b/m
		&& $res->{content} =~ /^rate_limiter_counter_used\b/m)
	{
		$body = $res->{content};
		last;
	}
	sleep 1;
}
ok($body ne '', "the exporter served the rate_limiter metrics within ${scrape_timeout_s}s")
  or diag("exporter stderr:\n$err");

# The value of one sample: name, then an optional {labels} matching $labels.
sub sample
{
	my ($name, $labels) = @_;
	$labels //= '';
	foreach my $line (split /\n/, $body)
	{
		next unless $line =~ /^\Q$name\E(\{([^}]*)\})?\s+(\S+)$/;
		my ($l, $v) = ($2 // '', $3);
		next if $labels ne '' && index($l, $labels) < 0;
		return $v + 0;
	}
	return undef;
}

is(sample('rate_limiter_total_checks'), 5, 'total_checks counts every call');
is(sample('rate_limiter_allowed_requests'), 3, 'allowed_requests');
is(sample('rate_limiter_denied_requests'), 2, 'denied_requests');
is(sample('rate_limiter_lock_timeouts'), 0, 'lock_timeouts');
like($body, qr/^# HELP rate_limiter_total_checks Decisions made by/m, 'counters carry their HELP text');
like($body, qr/^# TYPE rate_limiter_total_checks counter$/m, 'total_checks is a counter');
like($body, qr/^# TYPE rate_limiter_keys_in_use gauge$/m, 'keys_in_use is a gauge');
ok(sample('rate_limiter_keys_in_use') > 0, 'keys_in_use');
my ($p50, $p99) = (sample('rate_limiter_check_time_seconds_p50'), sample('rate_limiter_check_time_seconds_p99'));
ok(defined $p50 && $p50 > 0 && $p50 <= $p99 && $p99 < 10, 'percentiles are plausible and ordered');
is(sample('rate_limiter_counter_used', 'user_id="prom_u"'), 2, 'per-limit usage: prom_u used 2 requests');
is(sample('rate_limiter_counter_remaining', 'user_id="prom_t"'), 60, 'per-limit usage: prom_t has 60 tokens left');

# Stop the exporter (our own child) and the cluster.
$h->kill_kill;
$node->stop;
done_testing();
